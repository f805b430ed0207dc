"""Live training for the web page: one background training job at a time, watched by polling.

The page's Train tab sends a small configuration (hidden sizes, activation, optimizer, schedule,
loss, learning rate, batch size, epochs, number of training images), checked by TrainConfig itself;
the names it may choose come from the registry, so a newly registered activation or optimizer is
on the page without a line here. A thread trains exactly as ``digitnet train`` does (a
:class:`~digitnet.config.TrainConfig`, the first N MNIST training images, a stratified validation
split, :func:`~digitnet.training.build_trainer`), and a callback publishes what the page draws:

- every ~1/25 epoch a point ``(progress in epochs, mean loss and accuracy of the batches since the
  last point, learning rate)``;
- after every epoch the History row (train and validation loss/accuracy, lr, seconds);
- at most once a second and after every epoch, the first layer's weights as two pictures: unit
  ``j``'s 784 weights as a 28x28 tile (blue negative, white 0, red positive), and their change
  since the start of training (what learning has added to the random initial weights).

Control, all through :class:`TrainingManager` (thread-safe; one lock guards the shared state):
pause and resume (a :class:`threading.Event` the callback waits on after a batch), stop
(``trainer.request_stop``: the loop ends after the current batch), and a new learning rate while it
trains (``trainer.lr_scale = new_lr / base_lr``, which the Trainer multiplies into every step's
rate, schedule included). When the job ends after at least one batch, the model is evaluated on the
test split and handed to ``on_model`` (the app makes the Draw tab use it).

Routes (added by :func:`install_training`), every answer JSON, errors as ``{"error": ...}``:

- ``GET  /api/train/options``: the choices of activation (hidden ones), optimizer, schedule and loss
  with their formulas and settings, straight from the registry; defaults; TrainConfig's rule for
  each number; the page's own caps (:data:`LIMITS`);
- ``POST /api/train/start``: JSON settings -> 202 and the status; 409 while a job is active;
  422 for a bad setting;
- ``GET  /api/train/status?since=N&weights=V``: state, position, the points from index N on, the
  epoch table, the weights picture if its version is not V; never blocks;
- ``POST /api/train/pause``, ``/resume``, ``/stop``: 200 and the status; 409 when not applicable;
- ``POST /api/train/lr``: ``{"lr": 0.05}``; 409 without an active job, 422 for a bad rate;
- ``GET  /api/train/model``: the last trained model as a ``.safetensors`` file; 404 before one exists.

Everything is bounded (:data:`LIMITS`, the hidden sizes, the body size) so a page cannot exhaust the server.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import math
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from digitnet.errors import ConfigError, DigitnetError, TrainingInterrupted
from digitnet.training import Callback
from digitnet.web.model_info import model_info

logger = logging.getLogger("digitnet.web.training")

#: every setting the page may send, and its default: TrainConfig's fields, plus ``hidden`` (the sizes
#: between 784 and 10) and ``step_delay_ms`` (a pause after each batch, so that a small run can be watched)
DEFAULTS: dict[str, Any] = {
    "hidden": "128", "activation": "relu", "optimizer": "momentum", "schedule": "constant", "loss": "cross_entropy",
    "lr": 0.05, "batch_size": 64, "epochs": 5, "limit_train": 10000, "val_split": 0.1, "dropout": 0.0, "seed": 0,
    "step_delay_ms": 0,
}
#: The page's own caps (smallest, largest), on top of what TrainConfig allows: they keep one page from
#: occupying the server. Every other rule (names, ranges, types) is TrainConfig's, from the registry.
LIMITS: dict[str, tuple[int, int]] = {
    "epochs": (1, 100), "limit_train": (100, 60000), "batch_size": (1, 2048), "step_delay_ms": (0, 1000),
}
#: the registry kinds the page offers as choices, and the tag a choice must carry (None: every entry)
CHOICE_KINDS: dict[str, str | None] = {"activation": "hidden", "optimizer": None, "schedule": None, "loss": None}
#: hidden layers: at most this many, each at most this wide
MAX_HIDDEN_LAYERS = 4
MAX_HIDDEN_UNITS = 2048
#: points published per epoch (about)
POINTS_PER_EPOCH = 25
#: at most one weights picture per this many seconds (plus one after every epoch)
WEIGHTS_EVERY_SECONDS = 1.0
#: units shown in the weights picture, in rows of WEIGHT_COLUMNS
WEIGHT_UNITS = 32
WEIGHT_COLUMNS = 8
#: request bodies are tiny; anything larger is refused
MAX_BODY_BYTES = 16 * 1024
ACTIVE_STATES = ("loading", "running", "paused", "stopping")


class JobConflict(DigitnetError):
    """A request that does not fit the job's state (a second start, pausing an idle job): HTTP 409."""


# ----------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------
def hidden_sizes(text: Any) -> list[int]:
    """``"256-128"`` (or ``"256, 128"``, ``[256, 128]``, ``""`` for none) -> ``[256, 128]``, bounded."""
    if isinstance(text, list):
        parts = text
    else:
        parts = [p for p in str(text).replace(",", "-").replace(" ", "-").split("-") if p]
    try:
        sizes = [int(p) for p in parts]
    except (TypeError, ValueError):
        raise ConfigError(f"hidden layers must be sizes like 128 or 256-128, got {text!r}") from None
    if len(sizes) > MAX_HIDDEN_LAYERS or any(not 1 <= s <= MAX_HIDDEN_UNITS for s in sizes):
        raise ConfigError(f"at most {MAX_HIDDEN_LAYERS} hidden layers of 1-{MAX_HIDDEN_UNITS} units each, "
                          f"got {text!r}")
    return sizes


def settings_to_config(settings: dict[str, Any]):
    """The page's settings -> ``(TrainConfig, step_delay_ms)``; ConfigError names the bad setting.

    The network is ``784 - hidden... - 10``; training uses the first ``limit_train`` MNIST training
    images, of which ``val_split`` are held out (stratified) for the per-epoch validation numbers.
    Every value is checked by :meth:`TrainConfig.validate` (names from the registry, so a newly
    registered activation or optimizer is accepted at once), then against the page's caps :data:`LIMITS`.
    """
    from digitnet.config import TrainConfig
    from digitnet.nn.registry import Setting

    if not isinstance(settings, dict):
        raise ConfigError("the settings must be a JSON object")
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)} (known: {', '.join(DEFAULTS)})")
    values = {**DEFAULTS, **settings}
    hidden = hidden_sizes(values.pop("hidden"))
    delay_ms = Setting("step_delay_ms", "int", low=0).check(values.pop("step_delay_ms"), "")
    config = TrainConfig(dataset="mnist", arch="-".join(str(s) for s in [784, *hidden, 10]),
                         description="trained on the live training page", **values)
    config.validate()
    capped = {**config.to_dict(), "step_delay_ms": delay_ms}
    for key, (low, high) in LIMITS.items():
        if not low <= capped[key] <= high:
            raise ConfigError(f"{key} must be between {low:g} and {high:g} on this page, got {settings.get(key)!r}")
    return config, delay_ms


def choices() -> dict[str, list[dict[str, Any]]]:
    """What the page may choose, straight from the registry: for each of :data:`CHOICE_KINDS` the
    entries (name, formula, gradient, summary, settings with their ranges) and a ``label`` to show."""
    from digitnet.nn.registry import entries

    return {kind: [dict(found.to_dict(), label=_label(found)) for found in entries(kind, tag)]
            for kind, tag in CHOICE_KINDS.items()}


def _label(found) -> str:
    """The name as its class spells it when the class is the thing itself ("gelu" -> "GELU",
    "rmsprop" -> "RMSprop"), else the registered name ("momentum", an SGD with settings)."""
    spelled = getattr(found.target, "__name__", "")
    return spelled if spelled.lower() == found.name.replace("_", "") else found.name


# ----------------------------------------------------------------------------------------------
# The weights picture
# ----------------------------------------------------------------------------------------------
_BLUE_WHITE_RED = np.array([[49, 54, 149], [116, 173, 209], [247, 247, 247], [244, 109, 67], [165, 0, 38]], float)


def weights_picture(weights: np.ndarray, units: int = WEIGHT_UNITS, columns: int = WEIGHT_COLUMNS,
                    scale: int = 2) -> str | None:
    """The first ``units`` columns of first-layer weights ``[784, H]`` as 28x28 tiles: a PNG data URL.

    One colour scale for all tiles, symmetric around 0 (limit: the 99.5th percentile of ``|w|``), so
    the tiles can be compared; None for weights that are not ``[784, H]``.
    """
    from PIL import Image

    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[0] != 784:
        return None
    shown = weights[:, :units].T.reshape(-1, 28, 28)
    limit = float(np.percentile(np.abs(shown), 99.5)) or 1.0
    t = (np.clip(shown / limit, -1, 1) + 1) / 2 * (len(_BLUE_WHITE_RED) - 1)
    low = np.minimum(t.astype(int), len(_BLUE_WHITE_RED) - 2)
    rgb = _BLUE_WHITE_RED[low] + (t - low)[..., None] * (_BLUE_WHITE_RED[low + 1] - _BLUE_WHITE_RED[low])
    columns = min(columns, len(shown))
    rows = math.ceil(len(shown) / columns)
    sheet = np.full((rows * 29 - 1, columns * 29 - 1, 3), 255, dtype=np.uint8)
    for k, tile in enumerate(np.round(rgb).astype(np.uint8)):
        r, c = divmod(k, columns)
        sheet[r * 29:r * 29 + 28, c * 29:c * 29 + 28] = tile
    sheet = np.repeat(np.repeat(sheet, scale, axis=0), scale, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(sheet, mode="RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _first_dense_weights(model) -> np.ndarray | None:
    for layer in model.layers:
        if layer.params:
            weights = layer.params.get("weights")
            return weights if weights is not None and weights.ndim == 2 and weights.shape[0] == 784 else None
    return None


def _one_blas_thread():
    """Small matrix products run fastest on one BLAS thread, and it leaves the other cores to the web
    requests (threadpoolctl is optional: without it BLAS keeps its own setting)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


_MNIST: dict[tuple[str, str | None], Any] = {}
_MNIST_LOCK = threading.Lock()


def _mnist(split: str, data_dir: str | None):
    """MNIST ``split``, loaded once per process (decompressing 60,000 images is slow enough to notice)."""
    from digitnet.data.datasets import load_dataset

    with _MNIST_LOCK:
        key = (split, data_dir)
        if key not in _MNIST:
            _MNIST[key] = load_dataset("mnist", split=split, data_dir=data_dir)
        return _MNIST[key]


# ----------------------------------------------------------------------------------------------
# The job
# ----------------------------------------------------------------------------------------------
@dataclass
class Job:
    """One training run's settings and everything published about it (guarded by the manager's lock)."""

    number: int
    config: Any
    step_delay: float
    state: str = "loading"
    message: str = "loading the training images"
    points: list[dict[str, float]] = field(default_factory=list)
    epochs_log: list[dict[str, Any]] = field(default_factory=list)
    weights_image: str | None = None
    change_image: str | None = None
    initial_weights: np.ndarray | None = None
    weights_version: int = 0
    epoch: int = 0
    batch: int = 0
    batches_per_epoch: int = 0
    lr: float = 0.0
    train_images: int = 0
    val_images: int = 0
    num_params: int = 0
    test_accuracy: float | None = None
    test_loss: float | None = None
    model_ready: bool = False
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    trainer: Any = None
    lr_scale: float = 1.0
    stop_requested: bool = False
    go: threading.Event = field(default_factory=threading.Event)     # set = may run, clear = paused
    wake: threading.Event = field(default_factory=threading.Event)   # set by stop: ends waits early

    def __post_init__(self) -> None:
        self.go.set()
        self.lr = float(self.config.lr)


class _Publisher(Callback):
    """The training thread's view of the job: publishes points, epochs and weights; pauses; slows down."""

    def __init__(self, manager: TrainingManager, job: Job) -> None:
        self.manager, self.job = manager, job
        self.every = 1
        self.last_loss_sum = 0.0
        self.last_correct = 0
        self.last_count = 0
        self.last_picture = 0.0

    def on_train_begin(self, trainer) -> None:
        self.every = max(1, trainer.batches_per_epoch // POINTS_PER_EPOCH)
        with self.manager.lock:
            self.job.batches_per_epoch = trainer.batches_per_epoch
            if self.job.state == "loading":
                self.job.state, self.job.message = "running", "training"
        weights = _first_dense_weights(trainer.model)
        self.job.initial_weights = None if weights is None else weights.copy()
        self._picture(trainer, force=True)

    def on_epoch_begin(self, trainer, epoch) -> None:
        self.last_loss_sum, self.last_correct, self.last_count = 0.0, 0, 0

    def on_batch_end(self, trainer, batch, loss) -> None:
        job = self.job
        last_of_epoch = batch == trainer.batches_per_epoch - 1
        point = None
        if (batch + 1) % self.every == 0 or last_of_epoch:
            count = trainer.run_count - self.last_count
            if count > 0:
                point = {"epoch": trainer.epoch + (batch + 1) / trainer.batches_per_epoch,
                         "loss": (trainer.run_loss_sum - self.last_loss_sum) / count,
                         "accuracy": (trainer.run_correct - self.last_correct) / count,
                         "lr": float(trainer.optimizer.lr)}
            self.last_loss_sum, self.last_correct, self.last_count = (trainer.run_loss_sum, trainer.run_correct,
                                                                      trainer.run_count)
        with self.manager.lock:
            job.epoch, job.batch, job.lr = trainer.epoch, batch + 1, float(trainer.optimizer.lr)
            if point is not None:
                job.points.append(point)
        self._picture(trainer)
        if job.step_delay > 0:
            job.wake.wait(job.step_delay)       # slow motion; a stop ends the wait at once
        if not job.go.is_set():
            with self.manager.lock:
                if job.state == "running":
                    job.state, job.message = "paused", f"paused after batch {batch + 1} of epoch {trainer.epoch + 1}"
            job.go.wait()
            with self.manager.lock:
                if job.state == "paused":
                    job.state, job.message = "running", "training"

    def on_epoch_end(self, trainer, epoch, logs) -> None:
        row = {"epoch": epoch + 1, **{k: logs[k] for k in ("train_loss", "train_accuracy", "val_loss",
                                                           "val_accuracy", "lr", "seconds")}}
        with self.manager.lock:
            self.job.epochs_log.append(row)
            self.job.epoch = epoch + 1
            self.job.batch = 0
        self._picture(trainer, force=True)

    def _picture(self, trainer, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_picture < WEIGHTS_EVERY_SECONDS:
            return
        weights = _first_dense_weights(trainer.model)
        if weights is None:
            return
        self.last_picture = now
        self.manager._publish_pictures(self.job, weights)


class TrainingManager:
    """Runs at most one :class:`Job` in a background thread and answers the page's requests.

    Args:
        on_model: called with a :class:`~digitnet.io.LoadedModel` of the trained network when a job
            ends after at least one batch (the app swaps it in for the Draw tab).
        data_dir: folder with the MNIST files (default: the usual search, ``$DIGITNET_DATA`` first).
        kernels: "fast" or "reference" for every job (see :func:`~digitnet.training.build_trainer`).
    """

    def __init__(self, on_model: Callable[[Any], None] | None = None, data_dir: str | None = None,
                 kernels: str | None = None) -> None:
        if kernels is not None:
            from digitnet.kernels import resolve

            resolve(kernels)  # a bad choice fails when the server starts, not in a job
        self.lock = threading.Lock()
        self.on_model = on_model
        self.data_dir = data_dir
        self.kernels = kernels
        self.job: Job | None = None
        self.thread: threading.Thread | None = None
        self.last_model = None
        self._jobs = 0

    # -- control ----------------------------------------------------------------------------------
    def start(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Start a job; JobConflict while one is active, ConfigError for a bad setting."""
        config, delay_ms = settings_to_config(settings)
        with self.lock:
            if self.job is not None and self.job.state in ACTIVE_STATES:
                raise JobConflict(f"a training job is already {self.job.state} (job {self.job.number}): stop it "
                                  "before starting another; only one job runs at a time")
            self._jobs += 1
            job = Job(number=self._jobs, config=config, step_delay=delay_ms / 1000.0)
            self.job = job
            self.thread = threading.Thread(target=self._run, args=(job,), name=f"digitnet-training-{job.number}",
                                           daemon=True)
            self.thread.start()
        return self.status()

    def _active(self, action: str) -> Job:
        job = self.job
        if job is None or job.state not in ACTIVE_STATES:
            state = "no job has been started" if job is None else f"the last job is {job.state}"
            raise JobConflict(f"cannot {action}: {state}")
        return job

    def pause(self) -> dict[str, Any]:
        """Pause after the current batch (the state reads "paused" once the thread waits)."""
        with self.lock:
            job = self._active("pause")
            if job.state == "stopping":
                raise JobConflict("cannot pause: the job is stopping")
            job.go.clear()
            if job.state == "loading":
                job.message = "will pause when training starts"
        return self.status()

    def resume(self) -> dict[str, Any]:
        """Let a paused job go on from the batch where it stopped."""
        with self.lock:
            job = self._active("resume")
            job.go.set()
        return self.status()

    def stop(self) -> dict[str, Any]:
        """Stop after the current batch; the model trained so far is kept (and used by the Draw tab)."""
        with self.lock:
            job = self._active("stop")
            job.stop_requested = True
            job.state, job.message = "stopping", "stopping after the current batch"
            if job.trainer is not None:
                job.trainer.request_stop("stopped from the page")
            job.wake.set()
            job.go.set()
        return self.status()

    def set_lr(self, lr: Any) -> dict[str, Any]:
        """Change the learning rate from the next batch on (``lr_scale = lr / base_lr``)."""
        from digitnet.config import CONSTRAINTS

        value = CONSTRAINTS["lr"].check(lr, "")
        with self.lock:
            job = self._active("change the learning rate")
            job.lr_scale = value / float(job.config.lr)
            if job.trainer is not None:
                job.trainer.lr_scale = job.lr_scale
            job.message = f"learning rate set to {value:g} from the next batch on"
        return self.status()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the current job's thread to end; True when no job is running afterwards."""
        thread = self.thread
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    # -- status -----------------------------------------------------------------------------------
    def status(self, since: int = 0, weights_version: int = -1) -> dict[str, Any]:
        """What the page draws: state, position, points from index ``since``, epochs, maybe the weights."""
        with self.lock:
            job = self.job
            if job is None:
                return {"state": "idle", "message": "no training yet", "job": 0, "points": [], "points_total": 0,
                        "epochs_log": [], "weights": None, "weights_version": 0}
            since = max(0, int(since))
            total_batches = job.batches_per_epoch * job.config.epochs
            done = job.epoch * job.batches_per_epoch + job.batch
            return {
                "state": job.state, "message": job.message, "job": job.number,
                "settings": {"arch": job.config.arch, "activation": job.config.activation,
                             "optimizer": job.config.optimizer, "schedule": job.config.schedule,
                             "loss": job.config.loss, "lr": job.config.lr,
                             "batch_size": job.config.batch_size, "epochs": job.config.epochs,
                             "limit_train": job.config.limit_train, "val_split": job.config.val_split,
                             "dropout": job.config.dropout, "seed": job.config.seed,
                             "step_delay_ms": round(job.step_delay * 1000)},
                "epoch": job.epoch, "epochs": job.config.epochs, "batch": job.batch,
                "batches_per_epoch": job.batches_per_epoch,
                "progress": done / total_batches if total_batches else 0.0,
                "lr": job.lr, "lr_scale": job.lr_scale, "paused": not job.go.is_set(),
                "points": job.points[since:], "points_total": len(job.points), "epochs_log": list(job.epochs_log),
                "weights": job.weights_image if job.weights_version != weights_version else None,
                "weights_change": job.change_image if job.weights_version != weights_version else None,
                "weights_version": job.weights_version,
                "train_images": job.train_images, "val_images": job.val_images, "num_params": job.num_params,
                "test_accuracy": job.test_accuracy, "test_loss": job.test_loss, "model_ready": job.model_ready,
                "elapsed": round((job.ended or time.monotonic()) - job.started, 2),
            }

    # -- the thread -------------------------------------------------------------------------------
    def _dataset(self, split: str):
        return _mnist(split, self.data_dir)

    def _set(self, job: Job, **fields: Any) -> None:
        with self.lock:
            for name, value in fields.items():
                setattr(job, name, value)

    def _run(self, job: Job) -> None:
        from digitnet.config import seed_generators
        from digitnet.training import build_trainer

        config = job.config
        model = trainer = loss_fn = None
        outcome = ("failed", "training failed")
        try:
            with _one_blas_thread():
                # the data and generators of digitnet.runs.run_training: first N images, stratified split
                rngs = seed_generators(config.seed)
                train = self._dataset("train").head(config.limit_train)
                val = None
                if config.val_split > 0:
                    from digitnet.data.split import train_val_split

                    train, val = train_val_split(train, config.val_split, rngs["split"], stratified=True)
                trainer = build_trainer(config, train, val, kernels=self.kernels, callbacks=[_Publisher(self, job)],
                                        log=lambda message: logger.info("%s", message), rngs=rngs)
                trainer.record_grad_norms = False   # no one looks at them here
                model, loss_fn = trainer.model, trainer.loss_fn
                with self.lock:
                    job.trainer = trainer
                    trainer.lr_scale = job.lr_scale
                    job.train_images, job.val_images = len(train), 0 if val is None else len(val)
                    job.num_params = model.num_params()
                    stopped_early = job.stop_requested
                    if stopped_early:
                        trainer.request_stop("stopped from the page")
                if stopped_early:
                    raise TrainingInterrupted("stopped before the first batch")
                trainer.run()
            outcome = ("finished", f"finished {config.epochs} epochs")
        except TrainingInterrupted:
            if trainer is None or trainer.optimizer.steps == 0:
                outcome = ("stopped", "stopped before the first batch")
            elif trainer.batch_index == 0:
                outcome = ("stopped", f"stopped after epoch {trainer.epoch}")
            else:
                outcome = ("stopped", f"stopped at epoch {trainer.epoch + 1}, batch {trainer.batch_index}")
        except DigitnetError as exc:   # divergence, missing data, ...
            outcome = ("failed", str(exc))
        except Exception:   # a bug: keep the server alive and say so on the page
            logger.exception("training job %d failed", job.number)
            outcome = ("failed", "training failed with an internal error (logged on the server)")
        finally:
            self._finish(job, model, trainer, loss_fn, *outcome)

    def _finish(self, job: Job, model, trainer, loss_fn, state: str, message: str) -> None:
        """Evaluate the trained model on the test split, hand it over (after at least one batch), and
        only then publish the final ``state``: a page that sees "finished" finds the new model in place."""
        try:
            if state != "failed" and trainer is not None and trainer.optimizer.steps > 0:
                from digitnet.io import LoadedModel, model_metadata
                from digitnet.training import evaluate

                test = self._dataset("test")
                test_loss, test_accuracy = evaluate(model, loss_fn, test)
                metrics = {"test_accuracy": test_accuracy, "test_loss": test_loss, "test_count": len(test),
                           "epochs_run": len(trainer.history)}
                name = "trained on this page"
                loaded = LoadedModel(model=model, classes=list(test.classes),
                                     metadata=model_metadata(model, classes=list(test.classes), dataset="mnist",
                                                             training=job.config.to_dict(), metrics=metrics),
                                     path=Path(name))
                self.last_model = loaded
                if self.on_model is not None:
                    self.on_model(loaded)
                with self.lock:
                    job.test_accuracy, job.test_loss, job.model_ready = test_accuracy, test_loss, True
                message += (f"; test accuracy {100 * test_accuracy:.2f}% on {len(test):,} images; the Draw tab "
                            "now uses this network")
            self._picture_final(job, model)
        except Exception:   # never leave the job looking active
            logger.exception("finishing training job %d failed", job.number)
        finally:
            with self.lock:
                job.ended = time.monotonic()
                job.trainer = None
                job.state, job.message = state, message

    def _picture_final(self, job: Job, model) -> None:
        weights = _first_dense_weights(model) if model is not None else None
        if weights is not None:
            self._publish_pictures(job, weights)

    def _publish_pictures(self, job: Job, weights: np.ndarray) -> None:
        """Render the weights and their change since the start (in the calling thread), then publish both."""
        image = weights_picture(weights)
        change = weights_picture(weights - job.initial_weights) if job.initial_weights is not None else None
        with self.lock:
            job.weights_image, job.change_image = image, change
            job.weights_version += 1

    def model_file_bytes(self) -> bytes | None:
        """The last trained model as safetensors bytes (what ``digitnet`` loads), or None."""
        loaded = self.last_model
        if loaded is None:
            return None
        from digitnet.io import save_model

        with tempfile.TemporaryDirectory() as folder:
            path = save_model(Path(folder) / "model.safetensors", loaded.model, classes=loaded.classes,
                              dataset="mnist", training=loaded.metadata.get("training"),
                              metrics=loaded.metadata.get("metrics"))
            return path.read_bytes()


# ----------------------------------------------------------------------------------------------
# Routes
# ----------------------------------------------------------------------------------------------
def install_training(app, data_dir: str | None = None, kernels: str | None = None) -> TrainingManager:
    """Add the live-training routes to ``app`` (a FastAPI app from ``create_app``); returns the manager.

    When a job ends, ``app.state.loaded`` and ``app.state.info`` are replaced (under
    ``app.state.model_lock``) by the freshly trained model, so the Draw tab and ``/api/model`` use it.
    """
    app.state.model_lock = getattr(app.state, "model_lock", None) or threading.Lock()

    def swap(loaded) -> None:
        info = model_info(loaded)
        with app.state.model_lock:
            app.state.loaded = loaded
            app.state.info = info

    manager = TrainingManager(on_model=swap, data_dir=data_dir, kernels=kernels)
    app.state.training = manager
    router = APIRouter(prefix="/api/train", tags=["live training"])

    def answer(call: Callable[[], dict[str, Any]], status: int = 200) -> JSONResponse:
        try:
            return JSONResponse(call(), status_code=status)
        except JobConflict as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        except ConfigError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)

    async def body(request: Request) -> Any:
        data = await request.body()
        if len(data) > MAX_BODY_BYTES:
            raise ConfigError(f"request body over {MAX_BODY_BYTES:,} bytes")
        if not data:
            return {}
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"malformed JSON: {exc}") from None

    @router.get("/options", summary="The choices (from the registry), defaults, rules and caps of the settings")
    def options() -> dict[str, Any]:
        from digitnet.config import CONSTRAINTS

        entries = choices()
        return {"defaults": DEFAULTS, "limits": {k: list(v) for k, v in LIMITS.items()},
                "choices": {kind: [e["name"] for e in found] for kind, found in entries.items()},
                "entries": entries,
                "constraints": {k: CONSTRAINTS[k].to_dict() for k in DEFAULTS if k in CONSTRAINTS},
                "max_hidden_layers": MAX_HIDDEN_LAYERS, "max_hidden_units": MAX_HIDDEN_UNITS}

    @router.post("/start", status_code=202, summary="Start training (one job at a time; 409 while one is active)")
    async def start(request: Request) -> JSONResponse:
        try:
            settings = await body(request)
        except ConfigError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        return answer(lambda: manager.start(settings), status=202)

    @router.get("/status", summary="State, new curve points, epochs and the first-layer weights picture")
    def status(since: int = 0, weights: int = -1) -> JSONResponse:
        return JSONResponse(manager.status(since, weights))

    @router.post("/pause", summary="Pause after the current batch")
    def pause() -> JSONResponse:
        return answer(manager.pause)

    @router.post("/resume", summary="Resume a paused job")
    def resume() -> JSONResponse:
        return answer(manager.resume)

    @router.post("/stop", summary="Stop after the current batch and keep the model trained so far")
    def stop() -> JSONResponse:
        return answer(manager.stop)

    @router.post("/lr", summary="Change the learning rate while training")
    async def learning_rate(request: Request) -> JSONResponse:
        try:
            document = await body(request)
        except ConfigError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        if not isinstance(document, dict) or "lr" not in document:
            return JSONResponse({"error": 'send {"lr": number}'}, status_code=422)
        return answer(lambda: manager.set_lr(document["lr"]))

    @router.get("/model", summary="The last network trained here, as a .safetensors model file")
    def model_file() -> Response:
        data = manager.model_file_bytes()
        if data is None:
            return JSONResponse({"error": "no model has been trained here yet"}, status_code=404)
        return Response(data, media_type="application/octet-stream",
                        headers={"Content-Disposition": 'attachment; filename="trained-here.safetensors"'})

    app.include_router(router)
    return manager


__all__ = ["CHOICE_KINDS", "DEFAULTS", "LIMITS", "JobConflict", "TrainingManager", "choices", "hidden_sizes",
           "install_training", "settings_to_config", "weights_picture"]
