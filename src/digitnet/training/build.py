"""One wiring from a :class:`~digitnet.config.TrainConfig` to a ready :class:`Trainer`.

The command line (``runs.run_training``), the scikit-learn estimator, the web page's Train tab and
the benchmark all train through :func:`build_trainer`, so they train the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from digitnet import kernels as engine
from digitnet.config import (
    TrainConfig,
    build_augment,
    build_loss,
    build_model,
    build_optimizer,
    build_schedule,
    seed_generators,
)
from digitnet.kernels.threads import training_context
from digitnet.training.callbacks import Callback
from digitnet.training.loop import LabelledData, Trainer


class Parts(NamedTuple):
    """What a config builds: the textbook model, loss and optimizer, and the schedule and augmentation."""

    model: Any
    loss: Any
    optimizer: Any
    schedule: Any
    augment: Any


def build_parts(config: TrainConfig, rngs: dict[str, np.random.Generator] | None = None) -> Parts:
    """Build everything ``config`` names (ConfigError for a bad setting); weights from ``rngs["init"]``,
    dropout masks from ``rngs["dropout"]`` (default: :func:`~digitnet.config.seed_generators`)."""
    rngs = rngs or seed_generators(config.seed)
    return Parts(build_model(config, rngs["init"], rngs["dropout"]), build_loss(config), build_optimizer(config),
                 build_schedule(config), build_augment(config))


def build_trainer(
    config: TrainConfig,
    train: LabelledData,
    val: LabelledData | None = None,
    *,
    kernels: str | None = None,
    callbacks: Sequence[Callback] = (),
    log: Callable[[str], None] | None = None,
    rngs: dict[str, np.random.Generator] | None = None,
    threads: int | None = None,
) -> Trainer:
    """The :class:`Trainer` that trains as ``config`` says on ``train`` (and reports ``val`` per epoch).

    Args:
        kernels: "fast" (tuned kernels from :mod:`digitnet.kernels`) or "reference" (the textbook
            layers as written); None reads ``$DIGITNET_KERNELS``, else "fast". Either way the model,
            its config and its model file are the same.
        callbacks, log: passed to the Trainer.
        rngs: the generators of :func:`~digitnet.config.seed_generators` (default: from
            ``config.seed``); pass them when the caller already drew from them (the validation split).
        threads: how many threads the kernels use (None: ``$DIGITNET_THREADS``, else the cores); the
            results are bit-identical for any count (see :mod:`digitnet.kernels.parallel`).

    Train with ``trainer.model``, ``trainer.loss_fn`` and ``trainer.optimizer``: with the fast kernels
    they are the objects :func:`digitnet.kernels.speed_up` returned, not the ones first built.
    """
    fast = engine.resolve(kernels) == "fast"
    threads = engine.resolve_threads(threads)
    rngs = rngs or seed_generators(config.seed)
    model, loss_fn, optimizer, schedule, augment = build_parts(config, rngs)
    if fast:
        model, loss_fn, optimizer = engine.speed_up(model, loss_fn, optimizer, threads=threads)

    # BLAS threads (one with the kernels, whose workers use the cores; the size rule without them)
    # and, with the kernels, subnormal floats flushed to zero
    def epoch_context():  # entered at every epoch, so `trainer` exists by then
        return training_context(trainer.model, trainer.batch_size, threads)

    trainer = Trainer(model, loss_fn, optimizer, train, val, epochs=config.epochs,
                      batch_size=config.batch_size or None, rng=rngs["data"], schedule=schedule,
                      callbacks=callbacks, augment=augment, clip_norm=config.clip_norm,
                      on_divergence=config.on_divergence, log=log, epoch_context=epoch_context)
    return trainer
