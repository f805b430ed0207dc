"""The training state a checkpoint saves and restores, so a stopped run resumes bit-identically.

A checkpoint is a model file (:func:`digitnet.io.save_model`) with the rest of the state added:
the optimizer's arrays and step count, both random generators (data order and augmentation;
dropout masks), the epoch's shuffled order and the position in it, the running sums of the
epoch's metrics, the history, and the state of callbacks that keep one (early stopping).

:func:`snapshot` / :func:`restore_snapshot` keep the same state in memory for the retry after a
divergence (``on_divergence="reduce-lr"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from digitnet.errors import ModelFileError
from digitnet.training.history import History

if TYPE_CHECKING:
    from digitnet.training.loop import Trainer

CHECKPOINT_FORMAT = "digitnet.checkpoint"


def state(trainer: Trainer) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Tensors and JSON metadata that capture the whole training state."""
    tensors = {f"optimizer.{k}": v for k, v in trainer.optimizer.state_arrays().items()}
    if trainer.order is not None:
        tensors["trainer.order"] = trainer.order.astype(np.int64)
    callback_states = {}
    for cb in trainer.callbacks:  # callbacks with state of their own (early stopping's patience)
        if hasattr(cb, "state") and hasattr(cb, "load_state"):
            cb_tensors, callback_states[type(cb).__name__] = cb.state()
            tensors.update(cb_tensors)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "epoch": trainer.epoch,
        "batch_index": trainer.batch_index,
        "epochs": trainer.epochs,
        "batch_size": trainer.batch_size,
        "lr_scale": trainer.lr_scale,
        "optimizer": {"config": trainer.optimizer.config(), "steps": trainer.optimizer.steps},
        "rng": rng_state_to_json(trainer.rng),
        "model_rng": rng_state_to_json(trainer.model.rng),
        "running": {"loss_sum": trainer.run_loss_sum, "correct": trainer.run_correct, "count": trainer.run_count,
                    "seconds": trainer.run_seconds, "norm_sums": trainer.run_norm_sums.tolist(),
                    "norm_count": trainer.run_norm_count},
        "history": trainer.history.to_dict(),
        "stop_training": trainer.stop_training,
        "callbacks": callback_states,
    }
    return tensors, meta


def save(trainer: Trainer, path: str | Path, extra_meta: dict[str, Any] | None = None) -> Path:
    """Atomically write a resumable checkpoint (a model file with the training state added)."""
    from digitnet.io import save_model

    tensors, meta = state(trainer)
    if extra_meta:
        meta.update(extra_meta)
    save_model(path, trainer.model, classes=trainer.classes, extra_tensors=tensors,
               extra_meta={"checkpoint": meta})
    return Path(path)


def restore(trainer: Trainer, path: str | Path) -> dict[str, Any]:
    """Load the weights and training state written by :func:`save` into ``trainer``; returns its metadata."""
    from digitnet.io import load_model

    loaded = load_model(path, what="checkpoint")
    meta = loaded.metadata.get("checkpoint")
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path} is a model file, not a training checkpoint")
    try:
        trainer.model.load_state_dict(loaded.model.state_dict())
        optimizer_arrays = {k[len("optimizer."):]: v for k, v in loaded.extra_tensors.items()
                            if k.startswith("optimizer.")}
        trainer.optimizer.load_state_arrays(optimizer_arrays, meta["optimizer"]["steps"],
                                            len(trainer.param_names))
        trainer.epoch = int(meta["epoch"])
        trainer.batch_index = int(meta["batch_index"])
        trainer.lr_scale = float(meta.get("lr_scale", 1.0))
        trainer.order = loaded.extra_tensors.get("trainer.order")
        _check_position(trainer, path, meta)
        trainer.rng.bit_generator.state = rng_state_from_json(meta["rng"])
        trainer.model.rng.bit_generator.state = rng_state_from_json(meta["model_rng"])
        running = meta["running"]
        trainer.run_loss_sum = float(running["loss_sum"])
        trainer.run_correct = int(running["correct"])
        trainer.run_count = int(running["count"])
        trainer.run_seconds = float(running["seconds"])
        trainer.run_norm_sums = np.array(running["norm_sums"], dtype=np.float64)
        trainer.run_norm_count = int(running["norm_count"])
        trainer.history = History.from_dict(meta["history"])
        trainer.stop_training = bool(meta.get("stop_training", False))
        states = meta.get("callbacks") or {}
        for cb in trainer.callbacks:
            if hasattr(cb, "load_state") and type(cb).__name__ in states:
                cb.load_state(loaded.extra_tensors, states[type(cb).__name__])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: incomplete or damaged checkpoint ({exc})") from None
    except Exception as exc:  # digitnet's own errors pass through unchanged
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"{path}: damaged checkpoint ({type(exc).__name__}: {exc})") from None
    return meta


def _check_position(trainer: Trainer, path: str | Path, meta: dict[str, Any]) -> None:
    """The saved order and position must fit this run's training set and batch size."""
    if trainer.batch_index and trainer.order is None:
        raise ModelFileError(f"{path}: mid-epoch checkpoint without the epoch's order")
    n = len(trainer.images)
    order = trainer.order
    if order is not None and (order.shape != (n,) or order.dtype.kind not in "iu"
                              or not np.array_equal(np.sort(order), np.arange(n))):
        raise ModelFileError(f"{path}: the checkpoint's shuffled order of {order.size:,} images "
                             f"does not match this run ({n:,} training images): was config.json changed?")
    if not 0 <= trainer.batch_index <= trainer.batches_per_epoch or (
            trainer.batch_index and int(meta["batch_size"]) != trainer.batch_size):
        raise ModelFileError(f"{path}: the checkpoint's position (batch {trainer.batch_index} of size "
                             f"{meta['batch_size']}) does not match this run (batch size {trainer.batch_size})")


def snapshot(trainer: Trainer) -> dict[str, Any]:
    """Copies of the weights, the optimizer's state and both generators (kept in memory)."""
    return {"model": {k: v.copy() for k, v in trainer.model.state_dict().items()},
            "optimizer": {k: v.copy() for k, v in trainer.optimizer.state_arrays().items()},
            "steps": trainer.optimizer.steps,
            "rng": trainer.rng.bit_generator.state, "model_rng": trainer.model.rng.bit_generator.state}


def restore_snapshot(trainer: Trainer, snap: dict[str, Any]) -> None:
    """Put ``trainer`` back to the start of the epoch :func:`snapshot` was taken at."""
    trainer.model.load_state_dict(snap["model"])
    trainer.optimizer.load_state_arrays(snap["optimizer"], snap["steps"], len(trainer.param_names))
    trainer.rng.bit_generator.state = snap["rng"]
    trainer.model.rng.bit_generator.state = snap["model_rng"]
    trainer.batch_index = 0
    trainer.reset_running()


def rng_state_to_json(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state  # plain dict of str/int: JSON keeps Python's big ints exactly


def rng_state_from_json(data: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(data, dict) or "bit_generator" not in data:
        raise ValueError("bad random generator state")
    return data
