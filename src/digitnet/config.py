"""The training configuration: defaults, presets, validation, and the objects it builds.

A :class:`TrainConfig` is plain data (it round-trips through ``config.json``). Presets live in
``presets.toml`` beside this file and are merged over the defaults; explicit values (CLI flags,
keyword arguments) are merged over the preset. :func:`build_model`, :func:`build_optimizer` and
friends turn a config into the library objects, so the CLI, the Python API and the live training
page all train the same way.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from digitnet.errors import ConfigError
from digitnet.nn.registry import Setting, entry


def _fraction(name: str) -> Setting:
    return Setting(name, "float", low=0.0, high=1.0, open_high=True)


def _at_least(name: str, low: float, kind: str = "float", optional: bool = False) -> Setting:
    return Setting(name, kind, low=low, optional=optional)


#: What each TrainConfig field may hold, in one place (as scikit-learn's ``_parameter_constraints``).
#: Names of activations, losses, optimizers, schedules and initialisers come from the registry, so a
#: newly registered one is valid at once. The CLI and the web page turn a ConfigError into their message.
CONSTRAINTS: dict[str, Setting] = {
    "epochs": _at_least("epochs", 1, "int"),
    "batch_size": Setting("batch_size", "int", low=0, help="0 = full batch"),
    "lr": Setting("lr", "float", low=0.0, open_low=True),
    "momentum": Setting("momentum", "float", low=0.0, high=1.0, open_high=True, optional=True),
    "weight_decay": _at_least("weight_decay", 0.0, optional=True),
    "dropout": _fraction("dropout"),
    "label_smoothing": _fraction("label_smoothing"),
    "val_split": _fraction("val_split"),
    "warmup_epochs": _at_least("warmup_epochs", 0.0),
    "step_size": Setting("step_size", "float", low=0.0, open_low=True),
    "gamma": Setting("gamma", "float", low=0.0, high=1.0, open_low=True),
    "min_lr": _at_least("min_lr", 0.0),
    "clip_norm": _at_least("clip_norm", 0.0),
    "limit_train": _at_least("limit_train", 1, "int", optional=True),
    "early_stopping": _at_least("early_stopping", 0, "int"),
    "checkpoint_every": _at_least("checkpoint_every", 1, "int"),
    "seed": _at_least("seed", 0, "int"),
    "activation": Setting("activation", "str", choices_of="activation:hidden"),
    "output_activation": Setting("output_activation", "str", choices_of="activation:output", optional=True),
    "init": Setting("init", "str", choices_of="initializer", optional=True),
    "loss": Setting("loss", "str", choices_of="loss"),
    "loss_reduction": Setting("loss_reduction", "str", choices=("mean", "sum")),
    "optimizer": Setting("optimizer", "str", choices_of="optimizer"),
    "schedule": Setting("schedule", "str", choices_of="schedule"),
    "on_divergence": Setting("on_divergence", "str", choices=("stop", "reduce-lr")),
}


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
    loss_reduction: str = "mean"                 # "sum": gradients summed over the batch, not averaged
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
        """Check every field against :data:`CONSTRAINTS` (and the few rules that tie fields together),
        normalising names (``"Leaky-ReLU"`` -> ``"leaky_relu"``). Raises ConfigError for values that
        cannot train, naming the setting and its allowed values."""
        for name, setting in CONSTRAINTS.items():
            setattr(self, name, setting.check(getattr(self, name), ""))
        if self.arch is None and self.layers is None:
            raise ConfigError("give an architecture (arch or layers)")
        if self.label_smoothing and entry("loss", self.loss).setting("label_smoothing") is None:
            raise ConfigError(f"label smoothing applies to cross-entropy only, not {self.loss}")

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
    from digitnet.nn.sequential import Sequential

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

    return make_loss(config.loss, label_smoothing=config.label_smoothing, reduction=config.loss_reduction)


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
