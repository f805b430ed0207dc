"""Element-wise activation functions as layers (each a :class:`~digitnet.nn.base.Layer`).

All keep the shape: ``x [B, ...] -> y [B, ...]``. Each backward multiplies ``grad_out`` by the
local derivative, written in terms of what forward kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from digitnet.errors import ConfigError
from digitnet.nn.base import Layer, register_layer


@register_layer
class ReLU(Layer):
    """``y = max(x, 0)``; ``dy/dx = 1 where x > 0 else 0``."""

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        y = self.output_buffer("y", x.shape, x.dtype, training)
        np.maximum(x, 0, out=y)
        self._y = y
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        # y > 0 exactly where x > 0, so the kept output serves as the mask.
        np.copyto(grad_out, 0, where=self._y <= 0)
        return grad_out


@register_layer
class LeakyReLU(Layer):
    """``y = x if x > 0 else slope * x``; ``dy/dx = 1 if x > 0 else slope``."""

    def __init__(self, slope: float = 0.01) -> None:
        super().__init__()
        self.slope = float(slope)
        if not 0.0 <= self.slope < 1.0:
            raise ConfigError(f"LeakyReLU slope must be in [0, 1), got {slope}")

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._negative = x <= 0
        y = self.output_buffer("y", x.shape, x.dtype, training)
        np.multiply(x, np.where(self._negative, x.dtype.type(self.slope), x.dtype.type(1)), out=y)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        np.multiply(grad_out, self.slope, out=grad_out, where=self._negative)
        return grad_out

    def config(self) -> dict[str, Any]:
        return {"type": "LeakyReLU", "slope": self.slope}


def stable_sigmoid(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``1 / (1 + exp(-x))`` without overflow for large ``|x|``.

    Written as ``(1 + tanh(x / 2)) / 2``, which is exact and never evaluates exp of a large
    positive number (so ``sigmoid(-1000)`` is 0 with no warning).
    """
    out = np.multiply(x, x.dtype.type(0.5), out=out)
    np.tanh(out, out=out)
    out += 1
    out *= x.dtype.type(0.5)
    return out


@register_layer
class Sigmoid(Layer):
    """``y = 1 / (1 + exp(-x))``; ``dy/dx = y * (1 - y)``."""

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        y = self.output_buffer("y", x.shape, x.dtype, training)
        stable_sigmoid(x, out=y)
        self._y = y
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        y = self._y
        grad_out *= y
        grad_out *= 1 - y
        return grad_out


@register_layer
class Tanh(Layer):
    """``y = tanh(x)``; ``dy/dx = 1 - y**2``."""

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        y = self.output_buffer("y", x.shape, x.dtype, training)
        np.tanh(x, out=y)
        self._y = y
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        grad_out *= 1 - self._y * self._y
        return grad_out


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """``p_i = exp(z_i - max z) / sum_j exp(z_j - max z)``: subtracting the max avoids overflow."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=axis, keepdims=True)
    return shifted


@register_layer
class Softmax(Layer):
    """``y = softmax(x)`` over the last axis.

    Backward (the Jacobian-vector product): ``grad_in = y * (grad_out - sum(grad_out * y, axis=-1))``.
    For training prefer :class:`~digitnet.nn.losses.SoftmaxCrossEntropy` on logits, which fuses
    both into the simpler and more stable ``(p - onehot) / B``.
    """

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._y = softmax(x)
        return self._y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        y = self._y
        dot = np.sum(grad_out * y, axis=-1, keepdims=True)
        return y * (grad_out - dot)


ACTIVATIONS: dict[str, type[Layer]] = {
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "softmax": Softmax,
}


def activation_layer(name: str) -> Layer:
    """The activation layer called ``name`` ("relu", "leaky_relu", "sigmoid", "tanh", "softmax")."""
    key = name.lower().replace("-", "_")
    if key == "leakyrelu":
        key = "leaky_relu"
    if key not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r} (choose from {', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[key]()
