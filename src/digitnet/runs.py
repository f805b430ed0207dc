"""A training run on disk: load the data, build everything from a config, train, save, evaluate.

A run directory holds:

    config.json             the resolved TrainConfig (plus the digitnet version)
    initial.safetensors     the weights before the first step (for before/after pictures)
    checkpoint.safetensors  weights + optimizer + generators + position: what --resume continues from
    history.json            per-epoch metrics, rewritten after every epoch
    model.safetensors       the final model, with its test metrics in the metadata

Both the CLI (``digitnet train``) and the Python API go through :func:`run_training`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digitnet import __version__
from digitnet.atomic import read_json_object, write_json
from digitnet.config import TrainConfig, seed_generators
from digitnet.errors import ConfigError, ModelFileError
from digitnet.kernels import resolve, resolve_threads
from digitnet.training import Callback

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
MODEL_FILE = "model.safetensors"
INITIAL_FILE = "initial.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"


@dataclass
class RunResult:
    """What a finished run produced."""

    run_dir: Path
    model: Any
    history: Any
    metrics: dict[str, Any]
    classes: list[str]


def load_training_data(config: TrainConfig, split_rng):
    """(train, val or None, test) Datasets for ``config``: dataset, limit, validation split."""
    from digitnet.data.datasets import load_dataset

    train = load_dataset(config.dataset, split="train", data_dir=config.data_dir)
    test = load_dataset(config.dataset, split="test", data_dir=config.data_dir)
    if config.limit_train is not None and config.limit_train < len(train):
        train = train.head(config.limit_train)  # the first N, as the seed projects did
    val = None
    if config.val_split > 0:
        from digitnet.data.split import train_val_split

        train, val = train_val_split(train, config.val_split, split_rng, stratified=True)
    return train, val, test


class _HistoryWriter(Callback):
    """Rewrite history.json after every epoch, so a stopped run keeps its curves."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_epoch_end(self, trainer, epoch, logs):
        trainer.history.save(self.path)


def run_training(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    quiet: bool = False,
    handle_signals: bool = False,
    log: Callable[[str], None] | None = None,
    callbacks: list | None = None,
    kernels: str | None = None,
    threads: int | None = None,
) -> RunResult:
    """Train as ``config`` says, writing the run directory ``out_dir``; returns the result.

    With ``resume`` the run continues from ``out_dir/checkpoint.safetensors`` and ends with
    weights bit-identical to an uninterrupted run of the same config.
    With ``handle_signals`` Ctrl-C/SIGTERM stop after the current batch with a checkpoint
    (raising :class:`~digitnet.errors.TrainingInterrupted`).
    ``kernels`` ("fast", "reference", None for ``$DIGITNET_KERNELS`` or fast) is how the steps are
    computed, not what is trained: it is not part of the config. Nor is ``threads`` (None for
    ``$DIGITNET_THREADS`` or the cores): with the kernels, any thread count gives the same weights.
    """
    from digitnet.io import save_model
    from digitnet.training import Checkpoint, EarlyStopping, ProgressBar, evaluate, graceful_interrupts
    from digitnet.training.build import build_parts, build_trainer

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    out_dir = Path(out_dir)
    # A bad setting fails fast, before loading data or creating the run directory: everything the
    # config names is built once here (and again, identically, by build_trainer below).
    resolve(kernels)
    resolve_threads(threads)
    build_parts(config)
    rngs = seed_generators(config.seed)
    train, val, test = load_training_data(config, rngs["split"])
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create run directory {out_dir}: {exc.strerror}") from None

    cbs: list = [_HistoryWriter(out_dir / HISTORY_FILE)]
    if config.early_stopping:
        cbs.append(EarlyStopping(patience=config.early_stopping))
    # after early stopping has seen the epoch, so the checkpoint holds its up-to-date state
    cbs.append(Checkpoint(out_dir / CHECKPOINT_FILE, config.checkpoint_every))
    if not quiet:
        cbs.append(ProgressBar() if progress else ProgressBar(tty=False))  # off a TTY: a line per epoch
    cbs.extend(callbacks or [])
    trainer = build_trainer(config, train, val, kernels=kernels, callbacks=cbs, log=log, rngs=rngs, threads=threads)
    model, loss_fn = trainer.model, trainer.loss_fn
    trainer.checkpoint_path = out_dir / CHECKPOINT_FILE
    if resume:
        meta = trainer.restore_checkpoint(out_dir / CHECKPOINT_FILE)
        log(f"resuming {out_dir} at epoch {meta['epoch'] + 1}, batch {meta['batch_index']}")
    else:
        write_json(out_dir / CONFIG_FILE, {**config.to_dict(), "digitnet_version": __version__})
        save_model(out_dir / INITIAL_FILE, model, classes=train.classes, dataset=config.dataset,
                   training=config.to_dict())

    log(f"training {config.name} on {len(train):,} {config.dataset} images"
        + (f" (+{len(val):,} for validation)" if val is not None else "")
        + f" for {config.epochs} epochs, {model.num_params():,} parameters")
    started = time.perf_counter()
    if handle_signals:
        with graceful_interrupts(trainer):
            history = trainer.run()
    else:
        history = trainer.run()
    wall = time.perf_counter() - started

    test_loss, test_acc = evaluate(model, loss_fn, test)
    metrics = {
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "test_count": len(test),
        "train_seconds": float(sum(history.seconds)),
        "wall_seconds_this_session": wall,
        "epochs_run": len(history),
    }
    if history.val_accuracy and history.val_accuracy[-1] is not None:
        metrics["val_accuracy"] = history.val_accuracy[-1]
        metrics["val_loss"] = history.val_loss[-1]
    history.save(out_dir / HISTORY_FILE)
    save_model(out_dir / MODEL_FILE, model, classes=train.classes, dataset=config.dataset,
               training=config.to_dict(), metrics=metrics)
    return RunResult(run_dir=out_dir, model=model, history=history, metrics=metrics, classes=train.classes)


def read_run_config(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig stored in ``run_dir/config.json``."""
    data = read_json_object(Path(run_dir) / CONFIG_FILE, f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    data.pop("digitnet_version", None)
    return TrainConfig.from_dict(data)


def resume_training(run_dir: str | Path, **kwargs: Any) -> RunResult:
    """Continue the run in ``run_dir`` from its checkpoint."""
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT_FILE).exists():
        raise ModelFileError(f"{run_dir} has no {CHECKPOINT_FILE} to resume from")
    return run_training(read_run_config(run_dir), run_dir, resume=True, **kwargs)
