"""digitnet: a neural network written from scratch in NumPy that learns to read handwritten digits.

The package is layered in one direction (see docs/ARCHITECTURE.md):

    data  ->  nn  ->  train  ->  io / metrics  ->  cli, viz, web, report

``data`` knows nothing of ``nn``; ``nn`` knows nothing of files, the CLI or plots.
Heavy or optional modules (matplotlib, FastAPI) are imported lazily so ``import digitnet``
and the ``digitnet`` command start fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

from digitnet.errors import DigitnetError

__all__ = ["DigitnetError", "__version__"]
