"""The per-epoch record of a training run: what ``history.json`` holds."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from digitnet.errors import ConfigError


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
