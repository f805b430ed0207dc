"""Learning-rate schedules, as functions of training progress measured in epochs.

``progress`` is a float: ``epoch + batch_index / batches_per_epoch``, so a schedule changes
smoothly within an epoch (cosine, exponential) or at epoch boundaries (step). Without warm-up,
with ``e = progress`` and ``E = epochs``::

    constant:     lr = base_lr
    step:         lr = base_lr * gamma ** floor(e / step_size)
    exponential:  lr = base_lr * gamma ** e
    cosine:       lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * min(e / E, 1))) / 2

With ``warmup_epochs = w > 0`` the rate first rises linearly, ``lr = base_lr * progress / w``
(never below ``base_lr * min(0.001 / w, 1)``, so the very first step already moves), reaching ``base_lr``
at ``progress = w``; after that the schedule runs with ``e = progress - w`` and ``E = epochs - w``
(it starts from ``base_lr`` when warm-up ends).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from digitnet.errors import ConfigError
from digitnet.nn.registry import entry, register

#: smallest warm-up progress used, in epochs: the first step's rate is base_lr * this / warmup_epochs
_WARMUP_FLOOR = 1e-3


@register("schedule", "constant", formula="lr = base_lr")
def constant(schedule: Schedule, e: float, span: float) -> float:
    """The same rate throughout."""
    return schedule.base_lr


@register("schedule", "step", formula="lr = base_lr * gamma ** floor(e / step_size)")
def step(schedule: Schedule, e: float, span: float) -> float:
    """Multiply the rate by ``gamma`` every ``step_size`` epochs."""
    return schedule.base_lr * schedule.gamma ** math.floor(e / schedule.step_size)


@register("schedule", "exponential", formula="lr = base_lr * gamma ** e")
def exponential(schedule: Schedule, e: float, span: float) -> float:
    """Multiply the rate by ``gamma`` per epoch, smoothly."""
    return schedule.base_lr * schedule.gamma ** e


@register("schedule", "cosine", formula="lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * e / E)) / 2")
def cosine(schedule: Schedule, e: float, span: float) -> float:
    """Half a cosine from ``base_lr`` down to ``min_lr`` over the epochs after warm-up."""
    fraction = min(max(e / span, 0.0), 1.0) if span > 0 else 1.0
    return schedule.min_lr + (schedule.base_lr - schedule.min_lr) * 0.5 * (1 + math.cos(math.pi * fraction))


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule; call it with the progress in epochs to get the rate.

    Args:
        name: a registered schedule: "constant", "step", "exponential", "cosine", ...
        base_lr: the peak rate (after warm-up).
        epochs: the length of training, in epochs (cosine reaches ``min_lr`` there).
        warmup_epochs: length of the linear warm-up (0 = none); at most ``epochs``.
        step_size: epochs between decays of the "step" schedule.
        gamma: decay factor of "step" (per ``step_size``) and "exponential" (per epoch), in (0, 1].
        min_lr: the rate cosine ends at, in ``[0, base_lr]``.

    Example: ``Schedule("cosine", base_lr=0.1, epochs=10)(5.0) == 0.05``.
    """

    name: str = "constant"
    base_lr: float = 0.1
    epochs: float = 1.0
    warmup_epochs: float = 0.0
    step_size: float = 1.0
    gamma: float = 0.5
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        for field in fields(self):
            if field.name != "name":
                value = getattr(self, field.name)
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    raise ConfigError(f"schedule {field.name} must be a number, got {value!r}") from None
                if not math.isfinite(number):
                    raise ConfigError(f"schedule {field.name} must be finite, got {value!r}")
                object.__setattr__(self, field.name, number)     # frozen: set once, here
        rule = entry("schedule", self.name)
        object.__setattr__(self, "name", rule.name)
        object.__setattr__(self, "_rule", rule.target)              # not a field: looked up once
        if self.base_lr <= 0 or self.epochs <= 0 or self.warmup_epochs < 0 or self.step_size <= 0:
            raise ConfigError("schedule needs base_lr > 0, epochs > 0, warmup >= 0, step_size > 0")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"warm-up ({self.warmup_epochs} epochs) is longer than training "
                              f"({self.epochs} epochs)")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"schedule gamma must be in (0, 1], got {self.gamma}")
        if not 0 <= self.min_lr <= self.base_lr:
            raise ConfigError(f"min_lr must be in [0, base_lr={self.base_lr}], got {self.min_lr}")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Schedule:
        """Rebuild from :meth:`config`. Raises ConfigError on unknown keys or bad values."""
        known = {f.name for f in fields(cls)}
        if not isinstance(config, dict) or set(config) - known:
            raise ConfigError(f"bad schedule config {config!r} (known keys: {', '.join(sorted(known))})")
        return cls(**config)

    def __call__(self, progress: float) -> float:
        """The learning rate at ``progress`` epochs into training (see the module docstring)."""
        if self.warmup_epochs > 0 and progress < self.warmup_epochs:
            return self.base_lr * min(max(progress, _WARMUP_FLOOR) / self.warmup_epochs, 1.0)
        e = progress - self.warmup_epochs
        return self._rule(self, e, self.epochs - self.warmup_epochs)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable fields; ``Schedule.from_config(s.config()) == s``."""
        return asdict(self)
