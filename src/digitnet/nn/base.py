"""The layer protocol every building block follows, and the registry that rebuilds layers from JSON.

A layer is a small object with

- ``forward(x, training) -> y``: computes the output and keeps what ``backward`` needs;
- ``backward(grad_out) -> grad_in``: given dL/dy returns dL/dx and fills ``grads``;
- ``params`` and ``grads``: dicts of arrays with the same keys (``{"weights": ..., "bias": ...}``);
  a gradient array is allocated once and overwritten in place by every ``backward``, so an
  optimizer can hold on to (param, grad) pairs;
- ``buffers``: arrays that are state but not trained (BatchNorm's running statistics);
- ``config()``: a JSON-serialisable dict from which :func:`layer_from_config` rebuilds the layer.

Two conventions keep the hot path free of allocations:

- in training mode (``training=True``) a layer may write its output into a work buffer it owns and
  reuses: that output is valid until the layer's next ``forward``. In inference mode every output
  is a fresh array the caller may keep.
- ``backward`` may overwrite ``grad_out`` (it is a temporary of the layer above).

``compute_input_grad = False`` (set by :class:`~digitnet.nn.model.Sequential` on its first layer)
skips ``dL/dx``, which nobody needs for the input images.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from digitnet.errors import ConfigError

LAYER_TYPES: dict[str, type[Layer]] = {}


def register_layer(cls: type[Layer]) -> type[Layer]:
    """Class decorator: make ``cls`` rebuildable from ``{"type": cls.__name__, ...}``."""
    LAYER_TYPES[cls.__name__] = cls
    return cls


class Layer:
    """Base class: a layer with no parameters that passes its input through unchanged."""

    #: whether the layer has trainable parameters (Dense, convolutions, BatchNorm's scale and shift)
    trainable: ClassVar[bool] = False
    #: whether :func:`layer_from_config` must pass the model's ``rng`` (weight init, dropout masks)
    needs_rng: ClassVar[bool] = False
    #: attributes holding what forward kept for backward; :meth:`release_buffers` clears them
    cached_attributes: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.compute_input_grad = True
        self._work: dict[str, np.ndarray] = {}

    # -- protocol -------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """``y = f(x)`` for a batch ``x [B, ...]``; keeps what :meth:`backward` needs."""
        return x

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        """``dL/dx`` from ``dL/dy`` (same shapes as the last forward's x and y); fills ``grads``.

        Returns None when ``compute_input_grad`` is False and the layer skipped ``dL/dx``.
        """
        return grad_out

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description; ``layer_from_config(layer.config())`` rebuilds it."""
        return {"type": type(self).__name__}

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one sample's output given one sample's input shape (no batch axis)."""
        return input_shape

    # -- helpers --------------------------------------------------------------------------------
    def work_buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A reusable scratch array of ``shape`` and ``dtype``, allocated on first use."""
        buf = self._work.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = np.empty(shape, dtype=dtype)
            self._work[name] = buf
        return buf

    def output_buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype, training: bool) -> np.ndarray:
        """Reused buffer in training mode, fresh array in inference mode (see module docstring)."""
        if training:
            return self.work_buffer(name, shape, dtype)
        return np.empty(shape, dtype=dtype)

    def release_buffers(self) -> None:
        """Drop work buffers and cached activations (e.g. before saving or after training).

        Cached activations are the attributes named in ``cached_attributes`` (set to None).
        """
        self._work.clear()
        for name in self.cached_attributes:
            setattr(self, name, None)

    def num_params(self) -> int:
        """Number of trainable scalars (the sizes of every array in ``params``)."""
        return int(sum(p.size for p in self.params.values()))

    def num_buffer_values(self) -> int:
        """Number of non-trained state scalars (the sizes of every array in ``buffers``)."""
        return int(sum(b.size for b in self.buffers.values()))

    def describe(self) -> str:
        """A short human description for :meth:`Sequential.summary`, e.g. ``"784->128 (he)"``.

        The default lists the config's arguments (``"rate=0.2"``); layers override it when a
        better phrase exists.
        """
        return ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "type")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"


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
