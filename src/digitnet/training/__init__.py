"""Training: the loop, callbacks and progress, checkpoints and resume, the history.

- :mod:`~digitnet.training.loop`: :class:`Trainer`, :func:`fit`, :func:`evaluate`, :func:`graceful_interrupts`
- :mod:`~digitnet.training.callbacks`: :class:`Callback`, :class:`EarlyStopping`, :class:`Checkpoint`,
  :class:`LambdaCallback`; :mod:`~digitnet.training.progress`: :class:`ProgressBar`
- :mod:`~digitnet.training.checkpoint`: what a checkpoint saves and restores
- :mod:`~digitnet.training.history`: :class:`History` (``history.json``)
- :mod:`~digitnet.training.build`: :func:`build_trainer`, a Trainer from a TrainConfig
"""

from digitnet.training.build import build_trainer
from digitnet.training.callbacks import Callback, Checkpoint, EarlyStopping, LambdaCallback
from digitnet.training.history import History
from digitnet.training.loop import DIVERGED_LOSS, GRAD_NORM_EVERY, Trainer, evaluate, fit, graceful_interrupts
from digitnet.training.progress import ProgressBar, format_epoch

__all__ = [
    "DIVERGED_LOSS",
    "GRAD_NORM_EVERY",
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "ProgressBar",
    "Trainer",
    "build_trainer",
    "evaluate",
    "fit",
    "format_epoch",
    "graceful_interrupts",
]
