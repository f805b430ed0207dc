"""The training loop: epochs of shuffled mini-batches, metrics, callbacks, checkpoints.

One step, for a batch ``x [B, ...]`` with labels ``y [B]``::

    outputs = model.forward(x, training=True)        logits [B, K]
    loss    = loss_fn.forward(outputs, y)             mean over the batch
    grad    = loss_fn.backward()                      dL/d outputs, [B, K]
    model.backward(grad)                              fills every layer's grads
    optimizer.lr = base rate * schedule(progress)
    optimizer.step(model.parameters())                param -= lr * update, in place

The :class:`Trainer` keeps everything needed to stop after any batch and continue later with
bit-identical results: the weights, the optimizer's state, both random generators, the epoch's
shuffled order, the position in it, the running sums of the epoch's metrics, and the history.
:func:`fit` is the one-call interface.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitnet.data.batches import SCALE
from digitnet.data.dataset import Dataset
from digitnet.errors import ConfigError, DivergenceError, ModelFileError, TrainingInterrupted
from digitnet.nn.losses import Loss
from digitnet.nn.sequential import Sequential
from digitnet.nn.optim import Optimizer, clip_grad_norm
from digitnet.nn.schedules import Schedule

#: Gradient norms are recorded on every this-many-th batch (cheap, and plenty for a curve).
GRAD_NORM_EVERY = 8
CHECKPOINT_FORMAT = "digitnet.checkpoint"
#: A batch loss above this counts as divergence even while it is still finite: with a huge learning
#: rate a ReLU network blows up to losses of 1e30 and then "dies" (every unit off) without ever
#: producing NaN. Healthy cross-entropy starts near ln(10) = 2.3.
DIVERGED_LOSS = 1e4


# ----------------------------------------------------------------------------------------------
# History
# ----------------------------------------------------------------------------------------------
@dataclass
class History:
    """Per-epoch record of a training run (what ``history.json`` holds).

    Every list has one entry per finished epoch. ``val_*`` hold None when there is no validation
    set. ``seconds`` is the training time of the epoch (without validation). ``grad_norms`` maps
    each parameter name (``layers.0.weights``) to the mean L2 norm of its gradient per epoch.
    """

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    val_accuracy: list[float | None] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    grad_norms: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        known = {f: data[f] for f in cls.__dataclass_fields__ if f in data}
        return cls(**known)

    def save(self, path: str | Path) -> None:
        from digitnet.atomic import write_json

        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> History:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise ConfigError(f"no history file at {path}") from None
        except (json.JSONDecodeError, TypeError, AttributeError):
            raise ConfigError(f"{path} is not a valid history.json") from None

    def __len__(self) -> int:
        return len(self.epoch)

    @property
    def best_val_loss(self) -> float | None:
        values = [v for v in self.val_loss if v is not None]
        return min(values) if values else None


# ----------------------------------------------------------------------------------------------
# Callbacks
# ----------------------------------------------------------------------------------------------
class Callback:
    """Hooks called by :class:`Trainer`. Set ``trainer.stop_training = True`` to stop after an epoch."""

    def on_train_begin(self, trainer: Trainer) -> None: ...
    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None: ...
    def on_batch_end(self, trainer: Trainer, batch: int, loss: float) -> None: ...
    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...


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


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------
def _as_store(data: Dataset | tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
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


#: A training step whose largest matrix product is below this many FLOPs runs BLAS on one thread.
#: Measured on 2 vCPUs with OpenBLAS: a second thread speeds such products up by only ~1.3x, and
#: while it busy-waits between calls it slows the main thread's element-wise work by ~1.7x, so the
#: seed-002 MLP (largest product 26 MFLOP) trains faster on one (0.36 s vs 0.40 s per epoch); the
#: 784-800-10 MLP (160 MFLOP) and the CNN are faster with every core.
SMALL_MATMUL_FLOPS = 50e6


def largest_matmul_flops(model: Sequential, batch_size: int) -> float:
    """FLOPs of the largest matrix product in a training step: ``2 * B * weights.size * positions``
    for the layer that maximises it (positions = output pixels for a convolution, 1 for Dense)."""
    largest = 0.0
    for layer, shape in zip(model.layers, model.output_shapes(), strict=True):
        weights = layer.params.get("weights")
        if weights is not None and weights.ndim >= 2:
            positions = math.prod(shape[1:]) if len(shape) == 3 else 1
            largest = max(largest, 2.0 * batch_size * weights.size * positions)
    return largest


def blas_threads_for(model: Sequential, batch_size: int) -> contextlib.AbstractContextManager:
    """One BLAS thread for small networks (see SMALL_MATMUL_FLOPS), else the BLAS default.

    Uses threadpoolctl when it is installed (it comes with scikit-learn); without it, or with an
    explicit OPENBLAS_NUM_THREADS / OMP_NUM_THREADS in the environment, nothing changes.
    """
    import os

    if largest_matmul_flops(model, batch_size) >= SMALL_MATMUL_FLOPS or \
            "OPENBLAS_NUM_THREADS" in os.environ or "OMP_NUM_THREADS" in os.environ:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def evaluate(model: Sequential, loss_fn: Loss, data: Dataset | tuple[np.ndarray, np.ndarray],
             batch_size: int | None = None) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on labelled data, in inference mode."""
    images, labels = _as_store(data)
    batch_size = batch_size or model.inference_batch_size
    total_loss, correct, count = 0.0, 0, 0
    for start in range(0, len(images), batch_size):
        x = _to_inputs(images[start:start + batch_size], model.input_shape)
        y = labels[start:start + batch_size]
        outputs = model.forward(x, training=False)
        total_loss += loss_fn.forward(outputs, y) * len(y)
        correct += int(np.count_nonzero(outputs.argmax(axis=1) == y))
        count += len(y)
    if count == 0:
        return float("nan"), float("nan")
    return total_loss / count, correct / count


# ----------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------
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
    """

    def __init__(
        self,
        model: Sequential,
        loss_fn: Loss,
        optimizer: Optimizer,
        train: Dataset | tuple[np.ndarray, np.ndarray],
        val: Dataset | tuple[np.ndarray, np.ndarray] | None = None,
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
        self.history = History()
        self.stop_training = False
        self.lr_scale = 1.0
        # position: the next batch to run is `batch_index` of epoch `epoch`, in `order`
        self.epoch = 0
        self.batch_index = 0
        self.order: np.ndarray | None = None
        self._reset_running()
        self._stop_requested: str | None = None
        self.checkpoint_path: Path | None = None
        self._params = model.parameters()
        self._names = [name for name, _, _ in model.named_parameters()]

    # -- running metrics of the current epoch ---------------------------------------------------
    def _reset_running(self) -> None:
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
        snapshot = self._snapshot() if self.batch_index == 0 else None
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
                self._restore_snapshot(snapshot)
                self.lr_scale *= 0.1
                self.log(f"diverged: {getattr(exc, 'what', exc)} -> restored the weights of the epoch start "
                         f"and divided the learning rate by 10 (now x{self.lr_scale:g})")

    def _batches(self) -> Iterator[tuple[int, np.ndarray]]:
        for b in range(self.batch_index, self.batches_per_epoch):
            yield b, self.order[b * self.batch_size:(b + 1) * self.batch_size]

    def _run_epoch(self) -> None:
        with blas_threads_for(self.model, self.batch_size):
            self._run_epoch_batches()

    def _run_epoch_batches(self) -> None:
        epoch = self.epoch
        if self.batch_index == 0:
            self.order = self.rng.permutation(len(self.images))
            self._reset_running()
        for cb in self.callbacks:
            cb.on_epoch_begin(self, epoch)
        model, loss_fn, optimizer = self.model, self.loss_fn, self.optimizer
        if len(self.run_norm_sums) != len(self._params):
            self.run_norm_sums = np.zeros(len(self._params))
        raw_buf = x_buf = None
        lr = self.current_lr(epoch)
        for b, idx in self._batches():
            start = time.perf_counter()
            # gather the batch from the uint8 store, then scale it into a reused float32 buffer
            if raw_buf is None or len(raw_buf) != len(idx):
                raw_buf = np.empty((len(idx), *self.images.shape[1:]), dtype=self.images.dtype)
                x_buf = np.empty((len(idx), *model.input_shape), dtype=np.float32)
            np.take(self.images, idx, axis=0, out=raw_buf)
            raw = self.augment(raw_buf, self.rng) if self.augment is not None else raw_buf
            x = _to_inputs(raw, model.input_shape, out=x_buf)
            y = self.labels[idx]

            outputs = model.forward(x, training=True)
            loss = loss_fn.forward(outputs, y)
            if not math.isfinite(loss) or loss > DIVERGED_LOSS:
                self._diverged(f"the loss became {loss:.4g} at epoch {epoch + 1}, batch {b + 1}", lr)
            correct = int(np.count_nonzero(outputs.argmax(axis=1) == y))
            model.backward(loss_fn.backward())
            pairs = model.parameters()          # the gradients of this batch
            grads = [g for _, g in pairs]

            if self.clip_norm > 0:
                norm = clip_grad_norm(grads, self.clip_norm)
                if not math.isfinite(norm):
                    self._diverged(f"the gradient norm became {norm} at epoch {epoch + 1}, batch {b + 1}", lr)
            if self.record_grad_norms and b % GRAD_NORM_EVERY == 0:
                norms = np.array([math.sqrt(float(np.vdot(g, g))) for g in grads])
                if not np.all(np.isfinite(norms)):
                    self._diverged(f"a gradient became NaN or infinite at epoch {epoch + 1}, "
                                   f"batch {b + 1}", lr)
                self.run_norm_sums += norms
                self.run_norm_count += 1

            lr = self.current_lr(epoch + b / self.batches_per_epoch)
            optimizer.lr = lr
            optimizer.step(pairs)

            self.run_loss_sum += loss * len(y)
            self.run_correct += correct
            self.run_count += len(y)
            self.batch_index = b + 1
            self.run_seconds += time.perf_counter() - start
            for cb in self.callbacks:
                cb.on_batch_end(self, b, loss)
            if self._stop_requested is not None and self.batch_index < self.batches_per_epoch:
                self._interrupt()
        self._finish_epoch(lr)
        if self._stop_requested is not None and self.epoch < self.epochs:
            self._interrupt()

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
            for name, total in zip(self._names, self.run_norm_sums, strict=True):
                h.grad_norms.setdefault(name, []).append(float(total / self.run_norm_count))
        self.epoch += 1
        self.batch_index = 0
        self.order = None
        logs = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc, "val_loss": val_loss,
                "val_accuracy": val_acc, "lr": lr, "seconds": self.run_seconds}
        self._reset_running()
        for cb in self.callbacks:
            cb.on_epoch_end(self, epoch, logs)

    def _diverged(self, what: str, lr: float) -> None:
        hint = "try a learning rate 10x smaller (--lr) or gradient clipping (--clip-norm 5)"
        if self.on_divergence != "reduce-lr":
            hint = hint.replace(" or ", ", ") + ", or --on-divergence reduce-lr"
        kept = f"; the last good checkpoint is {self.checkpoint_path}" if self.checkpoint_path and \
            self.checkpoint_path.exists() else ""
        error = DivergenceError(f"training diverged: {what} (learning rate {lr:.4g}); {hint}{kept}")
        error.what = f"{what} (learning rate {lr:.4g})"
        raise error

    def _interrupt(self) -> None:
        where = f"epoch {self.epoch + 1}, batch {self.batch_index}/{self.batches_per_epoch}"
        if self.checkpoint_path is not None:
            self.save_checkpoint(self.checkpoint_path)
            raise TrainingInterrupted(f"{self._stop_requested} at {where}; checkpoint saved to "
                                      f"{self.checkpoint_path}; resume with: digitnet train --resume "
                                      f"{self.checkpoint_path.parent}")
        raise TrainingInterrupted(f"{self._stop_requested} at {where} (no checkpoint path set)")

    # -- snapshots and checkpoints ----------------------------------------------------------------
    def _snapshot(self) -> dict[str, Any]:
        return {"model": {k: v.copy() for k, v in self.model.state_dict().items()},
                "optimizer": {k: v.copy() for k, v in self.optimizer.state_arrays().items()},
                "steps": self.optimizer.steps,
                "rng": self.rng.bit_generator.state, "model_rng": self.model.rng.bit_generator.state}

    def _restore_snapshot(self, snap: dict[str, Any]) -> None:
        self.model.load_state_dict(snap["model"])
        self.optimizer.load_state_arrays(snap["optimizer"], snap["steps"], len(self._params))
        self.rng.bit_generator.state = snap["rng"]
        self.model.rng.bit_generator.state = snap["model_rng"]
        self.batch_index = 0
        self._reset_running()

    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Tensors and JSON metadata that capture the whole training state."""
        tensors = {f"optimizer.{k}": v for k, v in self.optimizer.state_arrays().items()}
        if self.order is not None:
            tensors["trainer.order"] = self.order.astype(np.int64)
        callback_states = {}
        for cb in self.callbacks:  # callbacks with state of their own (early stopping's patience)
            if hasattr(cb, "state") and hasattr(cb, "load_state"):
                cb_tensors, callback_states[type(cb).__name__] = cb.state()
                tensors.update(cb_tensors)
        meta = {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "batch_index": self.batch_index,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr_scale": self.lr_scale,
            "optimizer": {"config": self.optimizer.config(), "steps": self.optimizer.steps},
            "rng": _rng_state_to_json(self.rng),
            "model_rng": _rng_state_to_json(self.model.rng),
            "running": {"loss_sum": self.run_loss_sum, "correct": self.run_correct, "count": self.run_count,
                        "seconds": self.run_seconds, "norm_sums": self.run_norm_sums.tolist(),
                        "norm_count": self.run_norm_count},
            "history": self.history.to_dict(),
            "stop_training": self.stop_training,
            "callbacks": callback_states,
        }
        return tensors, meta

    def save_checkpoint(self, path: str | Path, extra_meta: dict[str, Any] | None = None) -> Path:
        """Atomically write a resumable checkpoint (a model file with the training state added)."""
        from digitnet.io import save_model

        tensors, meta = self.checkpoint_state()
        if extra_meta:
            meta.update(extra_meta)
        save_model(path, self.model, classes=self.classes, extra_tensors=tensors,
                   extra_meta={"checkpoint": meta})
        return Path(path)

    def restore_checkpoint(self, path: str | Path) -> dict[str, Any]:
        """Load the weights and training state written by :meth:`save_checkpoint`; returns its metadata."""
        from digitnet.io import load_model

        loaded = load_model(path, what="checkpoint")
        meta = loaded.metadata.get("checkpoint")
        if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
            raise ModelFileError(f"{path} is a model file, not a training checkpoint")
        try:
            self.model.load_state_dict(loaded.model.state_dict())
            optimizer_arrays = {k[len("optimizer."):]: v for k, v in loaded.extra_tensors.items()
                                if k.startswith("optimizer.")}
            self.optimizer.load_state_arrays(optimizer_arrays, meta["optimizer"]["steps"], len(self._params))
            self.epoch = int(meta["epoch"])
            self.batch_index = int(meta["batch_index"])
            self.lr_scale = float(meta.get("lr_scale", 1.0))
            self.order = loaded.extra_tensors.get("trainer.order")
            if self.batch_index and self.order is None:
                raise ModelFileError(f"{path}: mid-epoch checkpoint without the epoch's order")
            n = len(self.images)
            if self.order is not None and (self.order.shape != (n,) or self.order.dtype.kind not in "iu"
                                           or not np.array_equal(np.sort(self.order), np.arange(n))):
                raise ModelFileError(f"{path}: the checkpoint's shuffled order of {self.order.size:,} images "
                                     f"does not match this run ({n:,} training images): was config.json changed?")
            if not 0 <= self.batch_index <= self.batches_per_epoch or (
                    self.batch_index and int(meta["batch_size"]) != self.batch_size):
                raise ModelFileError(f"{path}: the checkpoint's position (batch {self.batch_index} of size "
                                     f"{meta['batch_size']}) does not match this run (batch size {self.batch_size})")
            self.rng.bit_generator.state = _rng_state_from_json(meta["rng"])
            self.model.rng.bit_generator.state = _rng_state_from_json(meta["model_rng"])
            running = meta["running"]
            self.run_loss_sum = float(running["loss_sum"])
            self.run_correct = int(running["correct"])
            self.run_count = int(running["count"])
            self.run_seconds = float(running["seconds"])
            self.run_norm_sums = np.array(running["norm_sums"], dtype=np.float64)
            self.run_norm_count = int(running["norm_count"])
            self.history = History.from_dict(meta["history"])
            self.stop_training = bool(meta.get("stop_training", False))
            states = meta.get("callbacks") or {}
            for cb in self.callbacks:
                if hasattr(cb, "load_state") and type(cb).__name__ in states:
                    cb.load_state(loaded.extra_tensors, states[type(cb).__name__])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: incomplete or damaged checkpoint ({exc})") from None
        except Exception as exc:  # digitnet's own errors pass through unchanged
            if isinstance(exc, ModelFileError):
                raise
            raise ModelFileError(f"{path}: damaged checkpoint ({type(exc).__name__}: {exc})") from None
        return meta


def _rng_state_to_json(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state  # plain dict of str/int: JSON keeps Python's big ints exactly


def _rng_state_from_json(state: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(state, dict) or "bit_generator" not in state:
        raise ValueError("bad random generator state")
    return state


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
    train: Dataset | tuple[np.ndarray, np.ndarray],
    val: Dataset | tuple[np.ndarray, np.ndarray] | None = None,
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
) -> History:
    """Train ``model`` and return its :class:`History` (see :class:`Trainer` for the arguments)."""
    trainer = Trainer(model, loss, optimizer, train, val, epochs=epochs, batch_size=batch_size, rng=rng,
                      schedule=schedule, callbacks=callbacks, augment=augment, clip_norm=clip_norm,
                      record_grad_norms=record_grad_norms, on_divergence=on_divergence)
    return trainer.run()
