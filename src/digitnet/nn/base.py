"""The layer protocol every building block follows.

A layer is a small object with

- ``forward(x, training) -> y``: computes the output and keeps what ``backward`` needs;
- ``backward(grad_out) -> grad_in``: given ``dL/dy`` returns ``dL/dx`` and sets ``grads``;
- ``params`` and ``grads``: dicts of arrays with the same keys (``{"weights": ..., "bias": ...}``).
  ``backward`` puts new gradient arrays into ``grads``, so read them after each backward;
- ``buffers``: arrays that are state but not trained (BatchNorm's running statistics);
- ``config()``: a JSON-serialisable dict from which :func:`layer_from_config` rebuilds the layer.

A layer's settings (sizes, rates, kernel sizes) and their allowed ranges are declared once, in its
:func:`~digitnet.nn.registry.register` call; ``self.configure(...)`` checks them against it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from digitnet.errors import ConfigError
from digitnet.nn.registry import LAYER_TYPES, load_all, register_layer

__all__ = ["LAYER_TYPES", "Layer", "layer_from_config", "register_layer"]


class Layer:
    """Base class: a layer with no parameters that passes its input through unchanged."""

    #: whether :func:`layer_from_config` must pass the model's ``rng`` (weight init, dropout masks)
    needs_rng: ClassVar[bool] = False
    #: attributes holding what forward kept for backward; :meth:`release_buffers` clears them
    cached_attributes: ClassVar[tuple[str, ...]] = ()
    #: the name model files store (set by ``register_layer``; the kernels inherit their reference's)
    layer_type: ClassVar[str] = "Layer"

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.release_buffers()          # what backward needs is not there until a forward

    def configure(self, **values: Any) -> None:
        """Check ``values`` against the layer's registered settings and set them as attributes."""
        entry = getattr(self, "registry_entry", None)
        checked = entry.check(values) if entry is not None else values
        for name, value in checked.items():
            setattr(self, name, value)

    # -- protocol -------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """``y = f(x)`` for a batch ``x [B, ...]``; keeps what :meth:`backward` needs."""
        return x

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """``dL/dx`` from ``dL/dy`` (same shapes as the last forward's x and y); sets ``grads``."""
        return grad_out

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description; ``layer_from_config(layer.config())`` rebuilds it."""
        entry = getattr(self, "registry_entry", None)
        settings = entry.settings if entry is not None else ()
        values = {s.name: _json(getattr(self, s.name)) for s in settings}
        return {"type": self.layer_type, **values}

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one sample's output given one sample's input shape (no batch axis)."""
        return input_shape

    # -- helpers --------------------------------------------------------------------------------
    def release_buffers(self) -> None:
        """Forget what forward kept for backward (before saving, or after training)."""
        for name in self.cached_attributes:
            setattr(self, name, None)

    def num_params(self) -> int:
        """Number of trainable scalars (the sizes of every array in ``params``)."""
        return int(sum(p.size for p in self.params.values()))

    def num_buffer_values(self) -> int:
        """Number of non-trained state scalars (the sizes of every array in ``buffers``)."""
        return int(sum(b.size for b in self.buffers.values()))

    def describe(self) -> str:
        """A short description for :meth:`Sequential.summary`: the settings, e.g. ``"rate=0.2"``."""
        return ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "type")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{self.layer_type}({args})"


def _json(value: Any) -> Any:
    """A setting as JSON stores it: a pair of equal sizes as one number, other pairs as a list."""
    if isinstance(value, tuple):
        return value[0] if len(set(value)) == 1 else list(value)
    return value


def layer_from_config(config: dict[str, Any], rng: np.random.Generator | None = None) -> Layer:
    """Rebuild a layer from its :meth:`Layer.config` dict.

    Args:
        config: ``{"type": "Dense", "in_features": 784, ...}``.
        rng: generator for weight initialisation and dropout masks.

    Raises:
        ConfigError: unknown type or bad arguments.
    """
    if not isinstance(config, dict) or "type" not in config:
        raise ConfigError(f"a layer config must be a dict with a 'type', got {config!r}")
    load_all()
    kind = config["type"]
    cls = LAYER_TYPES.get(kind)
    if cls is None:
        known = ", ".join(sorted(LAYER_TYPES))
        raise ConfigError(f"unknown layer type {kind!r} (known: {known})")
    kwargs = {k: v for k, v in config.items() if k != "type"}
    if getattr(cls, "needs_rng", False):
        kwargs["rng"] = rng
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad config for layer {kind}: {exc}") from None
