"""Hooks into the training loop: early stopping, checkpoints, and callbacks from plain functions.

A callback sees the :class:`~digitnet.training.loop.Trainer` itself; it stops training by setting
``trainer.stop_training = True`` (the loop ends after the epoch).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from digitnet.errors import ConfigError

if TYPE_CHECKING:
    from digitnet.training.loop import Trainer


class Callback:
    """Hooks called by :class:`Trainer`. Set ``trainer.stop_training = True`` to stop after an epoch."""

    def on_train_begin(self, trainer: Trainer) -> None: ...
    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None: ...
    def on_batch_end(self, trainer: Trainer, batch: int, loss: float) -> None: ...
    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...


class EarlyStopping(Callback):
    """Stop when validation loss has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best`` the weights of the best epoch are put back at the end.
    """

    def __init__(self, patience: int = 5, min_delta: float = 0.0, restore_best: bool = True) -> None:
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.restore_best = restore_best
        self.best_loss = math.inf
        self.best_epoch = -1
        self.best_state: dict[str, np.ndarray] | None = None
        self.wait = 0

    def on_epoch_end(self, trainer, epoch, logs):
        val_loss = logs.get("val_loss")
        if val_loss is None:
            raise ConfigError("early stopping needs a validation set (--val-split > 0)")
        if val_loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.wait = val_loss, epoch, 0
            if self.restore_best:
                self.best_state = {k: v.copy() for k, v in trainer.model.state_dict().items()}
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.stop_training = True
                trainer.log(f"early stopping: no improvement of val_loss for {self.patience} epochs "
                            f"(best {self.best_loss:.4f} at epoch {self.best_epoch + 1})")

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """What a checkpoint holds so a resumed run stops and restores exactly as an uninterrupted one."""
        tensors = {f"early_stopping.{name}": array for name, array in (self.best_state or {}).items()}
        return tensors, {"best_loss": self.best_loss, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state(self, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.best_loss = float(meta["best_loss"])
        self.best_epoch = int(meta["best_epoch"])
        self.wait = int(meta["wait"])
        prefix = "early_stopping."
        self.best_state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)} or None

    def on_train_end(self, trainer):
        if self.restore_best and self.best_state is not None and self.best_epoch != len(trainer.history) - 1:
            trainer.model.load_state_dict(self.best_state)
            trainer.log(f"restored the weights of epoch {self.best_epoch + 1}")


class Checkpoint(Callback):
    """Write a resumable checkpoint every ``every`` epochs (and always after the last one)."""

    def __init__(self, path: str | Path, every: int = 1) -> None:
        self.path = Path(path)
        self.every = max(1, int(every))

    def on_epoch_end(self, trainer, epoch, logs):
        if (epoch + 1) % self.every == 0 or epoch + 1 == trainer.epochs:
            trainer.save_checkpoint(self.path)


class LambdaCallback(Callback):
    """Callbacks from plain functions, e.g. ``LambdaCallback(on_epoch_end=lambda t, e, logs: ...)``."""

    def __init__(self, **hooks: Callable) -> None:
        for name, fn in hooks.items():
            if not hasattr(Callback, name):
                raise ConfigError(f"unknown callback hook {name!r}")
            setattr(self, name, fn)
