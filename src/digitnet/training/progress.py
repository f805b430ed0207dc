"""Progress output: a tqdm bar per epoch on a terminal, one plain line per epoch elsewhere."""

from __future__ import annotations

import sys
from typing import Any

from digitnet.training.callbacks import Callback


class ProgressBar(Callback):
    """A tqdm bar per epoch with the running loss and accuracy; one plain line per epoch off a TTY."""

    def __init__(self, stream=None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._bar = None

    def on_epoch_begin(self, trainer, epoch):
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=trainer.batches_per_epoch, initial=trainer.batch_index,
                             desc=f"epoch {epoch + 1}/{trainer.epochs}", unit="batch", leave=True,
                             file=self.stream, dynamic_ncols=True, mininterval=0.2)

    def on_batch_end(self, trainer, batch, loss):
        if self._bar is not None:
            self._bar.update(1)
            if batch % 25 == 0 or batch == trainer.batches_per_epoch - 1:
                loss_avg, acc = trainer.running_metrics()
                self._bar.set_postfix(loss=f"{loss_avg:.4f}", acc=f"{acc:.4f}", refresh=False)

    def on_epoch_end(self, trainer, epoch, logs):
        text = format_epoch(logs, trainer.epochs)
        if self._bar is not None:
            self._bar.set_postfix_str(text.split(": ", 1)[1], refresh=True)
            self._bar.close()
            self._bar = None
        else:
            print(text, file=self.stream, flush=True)

    def on_train_end(self, trainer):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def format_epoch(logs: dict[str, Any], epochs: int) -> str:
    """``epoch 3/10: loss 0.1234 acc 0.9650 | val_loss ... val_acc ... | lr 0.1 | 0.31s``."""
    text = (f"epoch {logs['epoch'] + 1}/{epochs}: loss {logs['train_loss']:.4f} "
            f"acc {logs['train_accuracy']:.4f}")
    if logs.get("val_loss") is not None:
        text += f" | val_loss {logs['val_loss']:.4f} val_acc {logs['val_accuracy']:.4f}"
    return text + f" | lr {logs['lr']:.4g} | {logs['seconds']:.2f}s"
