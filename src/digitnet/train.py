"""Only for ``viz/source.py``, which still imports ``History`` from here; delete with that import.

The training code is the package :mod:`digitnet.training`.
"""

from digitnet.training.history import History

__all__ = ["History"]
