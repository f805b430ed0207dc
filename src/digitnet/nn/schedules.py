"""Learning-rate schedules, as functions of training progress measured in epochs.

``progress`` is a float: ``epoch + batch_index / batches_per_epoch``, so a schedule changes
smoothly within an epoch (cosine) or at epoch boundaries (step). With ``warmup_epochs = w > 0``
the rate first rises linearly from ``base_lr / (w * batches)``-ish to ``base_lr`` over ``w``
epochs, then follows the schedule over the remaining ``epochs - w``:

    constant:     lr = base_lr
    step:         lr = base_lr * gamma ** floor(e / step_size)
    exponential:  lr = base_lr * gamma ** e
    cosine:       lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * e / E)) / 2

where ``e`` is progress after warm-up and ``E`` the epochs after warm-up.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from digitnet.errors import ConfigError

SCHEDULES = ("constant", "step", "exponential", "cosine")


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule; call it with the progress in epochs to get the rate."""

    name: str = "constant"
    base_lr: float = 0.1
    epochs: float = 1.0
    warmup_epochs: float = 0.0
    step_size: float = 1.0
    gamma: float = 0.5
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.name!r} (choose from {', '.join(SCHEDULES)})")
        if self.base_lr <= 0 or self.epochs <= 0 or self.warmup_epochs < 0 or self.step_size <= 0:
            raise ConfigError("schedule needs base_lr > 0, epochs > 0, warmup >= 0, step_size > 0")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"schedule gamma must be in (0, 1], got {self.gamma}")

    def __call__(self, progress: float) -> float:
        if self.warmup_epochs > 0 and progress < self.warmup_epochs:
            # linear from a small positive rate so the very first step already moves
            return self.base_lr * max(progress, 1e-3) / self.warmup_epochs
        e = progress - self.warmup_epochs
        span = max(self.epochs - self.warmup_epochs, 1e-12)
        if self.name == "constant":
            return self.base_lr
        if self.name == "step":
            return self.base_lr * self.gamma ** math.floor(e / self.step_size)
        if self.name == "exponential":
            return self.base_lr * self.gamma ** e
        fraction = min(max(e / span, 0.0), 1.0)
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * fraction))

    def config(self) -> dict[str, Any]:
        return asdict(self)
