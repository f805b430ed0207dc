"""The training loop: epochs of shuffled mini-batches, metrics, callbacks.

One step, for a batch ``x [B, ...]`` with labels ``y [B]``::

    outputs = model.forward(x, training=True)        logits [B, K]
    loss    = loss_fn.forward(outputs, y)             the batch's loss (its mean, or its sum)
    model.backward(loss_fn.backward())                dL/d outputs in, every layer's grads out
    pairs   = model.parameters()                      [(param, grad), ...] as backward left them
    optimizer.lr = base rate * schedule(progress)
    optimizer.step(pairs)                             param -= lr * update, in place

The :class:`Trainer` keeps everything needed to stop after any batch and continue later with
bit-identical results (see :mod:`digitnet.training.checkpoint`). :func:`fit` is the one-call
interface.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from digitnet.data.batches import SCALE
from digitnet.data.dataset import Dataset
from digitnet.errors import ConfigError, DivergenceError, TrainingInterrupted
from digitnet.nn.clipping import clip_grad_norm
from digitnet.nn.losses import Loss
from digitnet.nn.optim import Optimizer
from digitnet.nn.schedules import Schedule
from digitnet.nn.sequential import Sequential
from digitnet.training import checkpoint
from digitnet.training.callbacks import Callback
from digitnet.training.history import History

#: Gradient norms are recorded on every this-many-th batch (cheap, and plenty for a curve).
GRAD_NORM_EVERY = 8
#: A mean per-image loss above this counts as divergence even while it is still finite: with a huge learning
#: rate a ReLU network blows up to losses of 1e30 and then "dies" (every unit off) without ever
#: producing NaN. Healthy cross-entropy starts near ln(10) = 2.3.
DIVERGED_LOSS = 1e4

LabelledData = Dataset | tuple[np.ndarray, np.ndarray]


def _as_store(data: LabelledData) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(data, Dataset):
        if data.labels is None:
            raise ConfigError(f"{data.name} has no labels: cannot train or evaluate on it")
        return data.images, data.labels
    images, labels = data
    return np.asarray(images), np.asarray(labels)


def _to_inputs(raw: np.ndarray, input_shape: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
    """A stored batch (uint8 images or float features) -> float32 in the model's layout."""
    shape = (len(raw), *input_shape)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    raw = raw.reshape(shape)
    if raw.dtype == np.uint8:
        np.multiply(raw, SCALE, out=out, casting="unsafe")
    else:
        np.copyto(out, raw, casting="same_kind")
    return out


def evaluate(model: Sequential, loss_fn: Loss, data: LabelledData, batch_size: int | None = None
             ) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on labelled data, in inference mode."""
    images, labels = _as_store(data)
    batch_size = batch_size or model.inference_batch_size
    total_loss, correct, count = 0.0, 0, 0
    for start in range(0, len(images), batch_size):
        x = _to_inputs(images[start:start + batch_size], model.input_shape)
        y = labels[start:start + batch_size]
        outputs = model.forward(x, training=False)
        total_loss += loss_fn.per_sample(loss_fn.forward(outputs, y), len(y)) * len(y)
        correct += int(np.count_nonzero(outputs.argmax(axis=1) == y))
        count += len(y)
    if count == 0:
        return float("nan"), float("nan")
    return total_loss / count, correct / count


class Trainer:
    """Runs epochs of mini-batch training and can stop and resume at any batch boundary.

    Args:
        model, loss_fn, optimizer: what to train and how.
        train: labelled training data: a Dataset, or ``(inputs, labels)`` arrays where inputs are
            uint8 images (scaled by 1/255 per batch) or float features already in [0, 1].
        val: optional labelled validation data, evaluated after each epoch.
        epochs: number of passes over ``train``.
        batch_size: samples per step; ``None`` or >= N means full-batch gradient descent.
        rng: the generator for shuffling and augmentation (the model's own ``rng`` draws dropout masks).
        schedule: learning-rate schedule; its ``base_lr`` replaces the optimizer's ``lr``.
        augment: optional ``f(images_uint8 [B,H,W], rng) -> uint8 [B,H,W]`` applied per batch.
        clip_norm: clip the global gradient norm to this (0 = off).
        on_divergence: "stop" raises :class:`DivergenceError`; "reduce-lr" restores the weights of the
            last epoch start, divides the learning rate by 10 and retries (at most 3 times).
        log: where messages go (default: a line on stderr).
        epoch_context: called at the start of every epoch; the epoch runs inside the context manager
            it returns (``build_trainer`` passes the BLAS thread rule of the fast kernels here).
    """

    def __init__(
        self,
        model: Sequential,
        loss_fn: Loss,
        optimizer: Optimizer,
        train: LabelledData,
        val: LabelledData | None = None,
        *,
        epochs: int = 1,
        batch_size: int | None = 128,
        rng: np.random.Generator | None = None,
        schedule: Schedule | None = None,
        callbacks: Sequence[Callback] = (),
        augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
        clip_norm: float = 0.0,
        record_grad_norms: bool = True,
        on_divergence: str = "stop",
        log: Callable[[str], None] | None = None,
        epoch_context: Callable[[], contextlib.AbstractContextManager] | None = None,
    ) -> None:
        if epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {epochs}")
        if on_divergence not in ("stop", "reduce-lr"):
            raise ConfigError(f"on_divergence must be 'stop' or 'reduce-lr', got {on_divergence!r}")
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.images, self.labels = _as_store(train)
        outputs = model.output_shapes()[-1][0]
        self.classes = list(train.classes) if isinstance(train, Dataset) else [str(i) for i in range(outputs)]
        if len(self.images) == 0:
            raise ConfigError("the training set is empty")
        self.val = val
        self.epochs = int(epochs)
        n = len(self.images)
        self.batch_size = n if batch_size is None or batch_size >= n else int(batch_size)
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        self.batches_per_epoch = math.ceil(n / self.batch_size)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.schedule = schedule
        self.base_lr = schedule.base_lr if schedule is not None else optimizer.lr
        self.callbacks = list(callbacks)
        self.augment = augment
        self.clip_norm = float(clip_norm)
        self.record_grad_norms = record_grad_norms
        self.on_divergence = on_divergence
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self.epoch_context = epoch_context
        self.history = History()
        self.stop_training = False
        self.lr_scale = 1.0
        # position: the next batch to run is `batch_index` of epoch `epoch`, in `order`
        self.epoch = 0
        self.batch_index = 0
        self.order: np.ndarray | None = None
        self.reset_running()
        self._stop_requested: str | None = None
        self.checkpoint_path: Path | None = None
        self.param_names = [name for name, _, _ in model.named_parameters()]

    # -- running metrics of the current epoch ---------------------------------------------------
    def reset_running(self) -> None:
        self.run_loss_sum = 0.0
        self.run_correct = 0
        self.run_count = 0
        self.run_seconds = 0.0
        self.run_norm_sums = np.zeros(0)
        self.run_norm_count = 0

    def running_metrics(self) -> tuple[float, float]:
        """Mean loss and accuracy over the batches of this epoch so far."""
        if self.run_count == 0:
            return float("nan"), float("nan")
        return self.run_loss_sum / self.run_count, self.run_correct / self.run_count

    def request_stop(self, reason: str = "interrupted") -> None:
        """Ask the loop to stop after the current batch (safe to call from a signal handler)."""
        self._stop_requested = reason

    def current_lr(self, progress: float) -> float:
        rate = self.schedule(progress) if self.schedule is not None else self.base_lr
        return rate * self.lr_scale

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> History:
        """Train until ``epochs`` are done (or a callback stops); returns the history."""
        for cb in self.callbacks:
            cb.on_train_begin(self)
        try:
            # Overflow on the way to a NaN is reported once, clearly, by the divergence check,
            # instead of as a stream of NumPy RuntimeWarnings.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                while self.epoch < self.epochs and not self.stop_training:
                    self._run_epoch_with_recovery()
        finally:
            for cb in self.callbacks:
                cb.on_train_end(self)
            self.model.release_buffers()
        return self.history

    def _run_epoch_with_recovery(self) -> None:
        if self.on_divergence != "reduce-lr":
            self._run_epoch()
            return
        snapshot = checkpoint.snapshot(self) if self.batch_index == 0 else None
        for attempt in range(4):
            try:
                self._run_epoch()
                return
            except DivergenceError as exc:
                if snapshot is None:
                    raise
                if attempt == 3:
                    raise DivergenceError(f"{exc} (gave up after dividing the learning rate by 10 three "
                                          "times)") from None
                checkpoint.restore_snapshot(self, snapshot)
                self.lr_scale *= 0.1
                self.log(f"diverged: {getattr(exc, 'what', exc)} -> restored the weights of the epoch start "
                         f"and divided the learning rate by 10 (now x{self.lr_scale:g})")

    def _run_epoch(self) -> None:
        with self.epoch_context() if self.epoch_context is not None else contextlib.nullcontext():
            self._begin_epoch()
            lr = self.current_lr(self.epoch)
            start = time.perf_counter()
            for b, x, y in self._batches():
                loss, lr = self._step(x, y, b, lr)
                self.batch_index = b + 1
                self.run_seconds += time.perf_counter() - start   # callbacks are not training time
                for cb in self.callbacks:
                    cb.on_batch_end(self, b, loss)
                if self._stop_requested is not None and self.batch_index < self.batches_per_epoch:
                    self._interrupt()
                start = time.perf_counter()
            self._finish_epoch(lr)
            if self._stop_requested is not None and self.epoch < self.epochs:
                self._interrupt()

    def _begin_epoch(self) -> None:
        if self.batch_index == 0:
            self.order = self.rng.permutation(len(self.images))
            self.reset_running()
        for cb in self.callbacks:
            cb.on_epoch_begin(self, self.epoch)
        if len(self.run_norm_sums) != len(self.param_names):
            self.run_norm_sums = np.zeros(len(self.param_names))

    def _batches(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """The rest of this epoch's batches as ``(index, x, y)``: the uint8 rows gathered from the
        store (and augmented), then scaled into a float32 buffer reused from batch to batch."""
        raw_buf = x_buf = None
        input_shape = self.model.input_shape
        for b in range(self.batch_index, self.batches_per_epoch):
            idx = self.order[b * self.batch_size:(b + 1) * self.batch_size]
            if raw_buf is None or len(raw_buf) != len(idx):
                raw_buf = np.empty((len(idx), *self.images.shape[1:]), dtype=self.images.dtype)
                x_buf = np.empty((len(idx), *input_shape), dtype=np.float32)
            np.take(self.images, idx, axis=0, out=raw_buf)
            raw = self.augment(raw_buf, self.rng) if self.augment is not None else raw_buf
            yield b, _to_inputs(raw, input_shape, out=x_buf), self.labels[idx]

    def _step(self, x: np.ndarray, y: np.ndarray, batch: int, lr: float) -> tuple[float, float]:
        """One gradient step on batch number ``batch``; returns its loss and the learning rate it used
        (``lr``, the previous step's rate, only names the rate in a divergence message)."""
        model = self.model
        outputs = model.forward(x, training=True)
        loss = self.loss_fn.per_sample(self.loss_fn.forward(outputs, y), len(y))    # per image, either reduction
        if not math.isfinite(loss) or loss > DIVERGED_LOSS:
            self._diverged(f"the loss became {loss:.4g}", batch, lr)
        correct = int(np.count_nonzero(outputs.argmax(axis=1) == y))
        model.backward(self.loss_fn.backward())
        # a layer may hand back new gradient arrays in every backward: never reuse older pairs
        pairs = model.parameters()
        self._check_gradients([g for _, g in pairs], batch, lr)
        lr = self.current_lr(self.epoch + batch / self.batches_per_epoch)
        self.optimizer.lr = lr
        self.optimizer.step(pairs)
        self.run_loss_sum += loss * len(y)
        self.run_correct += correct
        self.run_count += len(y)
        return loss, lr

    def _check_gradients(self, grads: list[np.ndarray], batch: int, lr: float) -> None:
        """Clip the gradients (with ``clip_norm``) and record their norms; both catch NaN and inf."""
        if self.clip_norm > 0:
            norm = clip_grad_norm(grads, self.clip_norm)
            if not math.isfinite(norm):
                self._diverged(f"the gradient norm became {norm}", batch, lr)
        if self.record_grad_norms and batch % GRAD_NORM_EVERY == 0:
            norms = np.array([math.sqrt(float(np.vdot(g, g))) for g in grads])
            if not np.all(np.isfinite(norms)):
                self._diverged("a gradient became NaN or infinite", batch, lr)
            self.run_norm_sums += norms
            self.run_norm_count += 1

    def _finish_epoch(self, lr: float) -> None:
        epoch = self.epoch
        train_loss, train_acc = self.running_metrics()
        val_loss = val_acc = None
        if self.val is not None:
            val_loss, val_acc = evaluate(self.model, self.loss_fn, self.val)
        h = self.history
        h.epoch.append(epoch)
        h.train_loss.append(train_loss)
        h.train_accuracy.append(train_acc)
        h.val_loss.append(val_loss)
        h.val_accuracy.append(val_acc)
        h.lr.append(lr)
        h.seconds.append(self.run_seconds)
        if self.record_grad_norms and self.run_norm_count:
            for name, total in zip(self.param_names, self.run_norm_sums, strict=True):
                h.grad_norms.setdefault(name, []).append(float(total / self.run_norm_count))
        self.epoch += 1
        self.batch_index = 0
        self.order = None
        logs = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc, "val_loss": val_loss,
                "val_accuracy": val_acc, "lr": lr, "seconds": self.run_seconds}
        self.reset_running()
        for cb in self.callbacks:
            cb.on_epoch_end(self, epoch, logs)

    def _diverged(self, what: str, batch: int, lr: float) -> None:
        what = f"{what} at epoch {self.epoch + 1}, batch {batch + 1} (learning rate {lr:.4g})"
        hint = "try a learning rate 10x smaller (--lr) or gradient clipping (--clip-norm 5)"
        if self.on_divergence != "reduce-lr":
            hint = hint.replace(" or ", ", ") + ", or --on-divergence reduce-lr"
        kept = f"; the last good checkpoint is {self.checkpoint_path}" if self.checkpoint_path and \
            self.checkpoint_path.exists() else ""
        error = DivergenceError(f"training diverged: {what}; {hint}{kept}")
        error.what = what
        raise error

    def _interrupt(self) -> None:
        where = f"epoch {self.epoch + 1}, batch {self.batch_index}/{self.batches_per_epoch}"
        if self.checkpoint_path is not None:
            self.save_checkpoint(self.checkpoint_path)
            raise TrainingInterrupted(f"{self._stop_requested} at {where}; checkpoint saved to "
                                      f"{self.checkpoint_path}; resume with: digitnet train --resume "
                                      f"{self.checkpoint_path.parent}")
        raise TrainingInterrupted(f"{self._stop_requested} at {where} (no checkpoint path set)")

    # -- checkpoints (digitnet.training.checkpoint says what they hold) ---------------------------
    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Tensors and JSON metadata that capture the whole training state."""
        return checkpoint.state(self)

    def save_checkpoint(self, path: str | Path, extra_meta: dict[str, Any] | None = None) -> Path:
        """Atomically write a resumable checkpoint (a model file with the training state added)."""
        return checkpoint.save(self, path, extra_meta)

    def restore_checkpoint(self, path: str | Path) -> dict[str, Any]:
        """Load the weights and training state written by :meth:`save_checkpoint`; returns its metadata."""
        return checkpoint.restore(self, path)


@contextlib.contextmanager
def graceful_interrupts(trainer: Trainer) -> Iterator[None]:
    """While active, Ctrl-C (SIGINT) and SIGTERM ask ``trainer`` to stop after the current batch.

    A second Ctrl-C falls back to the default behaviour (immediate KeyboardInterrupt).
    """
    previous: dict[int, Any] = {}

    def handler(signum, frame):
        name = "interrupted (Ctrl-C)" if signum == signal.SIGINT else "terminated (SIGTERM)"
        if trainer._stop_requested is not None:
            raise KeyboardInterrupt
        trainer.request_stop(name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not in the main thread: leave signals alone
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def fit(
    model: Sequential,
    loss: Loss,
    optimizer: Optimizer,
    train: LabelledData,
    val: LabelledData | None = None,
    *,
    epochs: int = 1,
    batch_size: int | None = 128,
    rng: np.random.Generator | None = None,
    schedule: Schedule | None = None,
    callbacks: Sequence[Callback] = (),
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    clip_norm: float = 0.0,
    record_grad_norms: bool = True,
    on_divergence: str = "stop",
    epoch_context: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> History:
    """Train ``model`` and return its :class:`History` (see :class:`Trainer` for the arguments)."""
    trainer = Trainer(model, loss, optimizer, train, val, epochs=epochs, batch_size=batch_size, rng=rng,
                      schedule=schedule, callbacks=callbacks, augment=augment, clip_norm=clip_norm,
                      record_grad_norms=record_grad_norms, on_divergence=on_divergence,
                      epoch_context=epoch_context)
    return trainer.run()
