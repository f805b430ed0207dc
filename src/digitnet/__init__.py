"""digitnet: a neural network written from scratch in NumPy that learns to read handwritten digits.

The package is layered in one direction (see docs/ARCHITECTURE.md):

    data  ->  nn  ->  training  ->  io / metrics  ->  cli, viz, web, report

``data`` knows nothing of ``nn``; ``nn`` knows nothing of files, the CLI or plots.
Heavy or optional modules (matplotlib, FastAPI) are imported lazily so ``import digitnet``
and the ``digitnet`` command start fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

from digitnet.errors import DigitnetError

__all__ = ["Classifier", "DigitnetError", "__version__"]


def __getattr__(name: str):
    # Lazy: `import digitnet` stays fast; `digitnet.Classifier` loads the training stack on first use.
    if name == "Classifier":
        from digitnet.classifier import Classifier

        return Classifier
    raise AttributeError(f"module 'digitnet' has no attribute {name!r}")
