"""The training configuration: defaults, presets, validation, and the objects it builds.

A :class:`TrainConfig` is plain data (it round-trips through ``config.json``). Presets live in
``presets.toml`` beside this file and are merged over the defaults; explicit values (CLI flags,
keyword arguments) are merged over the preset. :func:`build_model`, :func:`build_optimizer` and
friends turn a config into the library objects, so the CLI, the Python API and the live training
page all train the same way.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from digitnet.errors import ConfigError


@dataclass
class TrainConfig:
    """Everything that defines a training run. ``batch_size = 0`` means full batch."""

    preset: str | None = None
    dataset: str = "mnist"
    data_dir: str | None = None
    arch: str | None = "784-128-64-10"
    layers: list[dict[str, Any]] | None = None  # explicit layer configs (CNNs); overrides arch
    input_shape: list[int] | None = None         # with layers: e.g. [1, 28, 28]
    activation: str = "relu"
    output_activation: str | None = None
    init: str | None = None
    dropout: float = 0.0
    loss: str = "cross_entropy"
    label_smoothing: float = 0.0
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float | None = None
    weight_decay: float | None = None            # None: the optimizer's default (AdamW 0.01, else 0)
    epochs: int = 10
    batch_size: int = 128
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    step_size: float = 10.0
    gamma: float = 0.5
    min_lr: float = 0.0
    clip_norm: float = 0.0
    val_split: float = 0.0
    limit_train: int | None = None
    seed: int = 0
    augment: dict[str, Any] | None = None
    early_stopping: int = 0                      # patience in epochs; 0 = off
    checkpoint_every: int = 1
    on_divergence: str = "stop"
    description: str = ""
    reported_accuracy: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        if not isinstance(data, dict):
            raise ConfigError("a training configuration must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown configuration keys: {', '.join(unknown)}")
        config = cls(**data)
        config.validate()
        return config

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (None values are ignored) and validated."""
        changes = {k: v for k, v in changes.items() if v is not None}
        config = dataclasses.replace(self, **changes)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ConfigError for values that cannot train."""
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 0, f"batch size must be >= 0 (0 = full batch), got {self.batch_size}"),
            (self.lr > 0 and math.isfinite(self.lr), f"learning rate must be > 0, got {self.lr}"),
            (0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
            (0 <= self.val_split < 1, f"validation split must be in [0, 1), got {self.val_split}"),
            (self.weight_decay is None or self.weight_decay >= 0,
             f"weight decay must be >= 0, got {self.weight_decay}"),
            (self.limit_train is None or self.limit_train >= 1, "limit_train must be >= 1"),
            (self.on_divergence in ("stop", "reduce-lr"), "on_divergence must be 'stop' or 'reduce-lr'"),
            (self.arch is not None or self.layers is not None, "give an architecture (arch or layers)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def name(self) -> str:
        return self.preset or "custom"


@lru_cache(maxsize=1)
def presets() -> dict[str, dict[str, Any]]:
    """All presets from ``presets.toml``, by name."""
    text = resources.files("digitnet").joinpath("presets.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def preset_help() -> str:
    """One line per preset: ``name: description``."""
    return "\n".join(f"  {name}: {p.get('description', '')}" for name, p in presets().items())


def load_preset(name: str) -> TrainConfig:
    """The :class:`TrainConfig` of preset ``name``."""
    table = presets().get(name)
    if table is None:
        raise ConfigError(f"unknown preset {name!r}; choose from: {', '.join(presets())}")
    return TrainConfig.from_dict({**table, "preset": name})


# ----------------------------------------------------------------------------------------------
# Building objects from a config
# ----------------------------------------------------------------------------------------------
def seed_generators(seed: int) -> dict[str, np.random.Generator]:
    """Independent generators for weight init, data order/augmentation, dropout and the split."""
    init, data, dropout, split = np.random.SeedSequence(seed).spawn(4)
    return {"init": np.random.default_rng(init), "data": np.random.default_rng(data),
            "dropout": np.random.default_rng(dropout), "split": np.random.default_rng(split)}


def build_model(config: TrainConfig, init_rng: np.random.Generator, dropout_rng: np.random.Generator):
    """The Sequential the config describes; dropout masks come from ``dropout_rng``."""
    from digitnet.nn.model import Sequential

    if config.layers is not None:
        arch = {"layers": config.layers, "input_shape": config.input_shape or [1, 28, 28]}
        model = Sequential.from_config(arch, rng=init_rng)
    else:
        model = Sequential.from_spec(config.arch, config.activation, dropout=config.dropout, init=config.init,
                                     output_activation=config.output_activation, rng=init_rng)
    # rebuild with the dropout generator so init and dropout draw from separate streams
    return Sequential(model.layers, input_shape=model.input_shape, rng=dropout_rng)


def build_loss(config: TrainConfig):
    from digitnet.nn.losses import make_loss

    return make_loss(config.loss, label_smoothing=config.label_smoothing)


def build_optimizer(config: TrainConfig):
    from digitnet.nn.optim import make_optimizer

    return make_optimizer(config.optimizer, config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)


def build_schedule(config: TrainConfig):
    from digitnet.nn.schedules import Schedule

    return Schedule(name=config.schedule, base_lr=config.lr, epochs=config.epochs,
                    warmup_epochs=config.warmup_epochs, step_size=config.step_size, gamma=config.gamma,
                    min_lr=config.min_lr)


def build_augment(config: TrainConfig):
    """The per-batch augmentation function, or None."""
    if not config.augment:
        return None
    from digitnet.data.augment import Augmenter

    try:
        return Augmenter(**config.augment)
    except TypeError as exc:
        raise ConfigError(f"bad augment settings {config.augment}: {exc}") from None


def config_field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


__all__ = ["TrainConfig", "build_augment", "build_loss", "build_model", "build_optimizer", "build_schedule",
           "config_field_names", "load_preset", "preset_help", "presets", "seed_generators"]
