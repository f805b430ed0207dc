"""Element-wise activation functions, each a layer: ``x [B, ...] -> y [B, ...]``, same shape.

Each backward multiplies ``grad_out`` by the local derivative ``dy/dx``, written in terms of what
forward kept (usually ``y`` itself). Each registers the initialiser that suits it: He for the ReLU
family, Xavier for the squashing functions.
"""

from __future__ import annotations

import numpy as np

from digitnet.nn.base import Layer
from digitnet.nn.registry import Setting, entry, register


class Activation(Layer):
    """Shared by the activations: forward keeps its output ``y`` for backward."""

    cached_attributes = ("y",)

    def __init__(self) -> None:
        super().__init__()
        self.y: np.ndarray | None = None


@register("activation", "relu", formula="y = max(x, 0)", gradient="grad_x = grad_y * (y > 0)",
          tags=("hidden",), init="he")
class ReLU(Activation):
    """Rectified linear unit: ``y = max(x, 0)``; ``dy/dx = 1 where x > 0 else 0`` (0 at the kink).

    ``y > 0`` exactly where ``x > 0``, so the kept output gives the derivative.
    """

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self.y = np.maximum(x, 0)
        return self.y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out * (self.y > 0)


@register("activation", "leaky_relu", formula="y = x if x > 0 else slope * x",
          gradient="grad_x = grad_y * (1 if y > 0 else slope)", tags=("hidden",), init="he",
          settings=(Setting("slope", "float", 0.01, low=0.0, high=1.0, open_high=True,
                            help="the gradient for negative inputs"),))
class LeakyReLU(Activation):
    """ReLU that lets a little gradient through for negative inputs.

    ``y = x if x > 0 else slope * x``;  ``dy/dx = 1 if x > 0 else slope``, with ``0 <= slope < 1``.
    Because ``slope < 1``, ``y = max(x, slope * x)``, and ``y > 0`` exactly where ``x > 0``.
    """

    def __init__(self, slope: float = 0.01) -> None:
        super().__init__()
        self.configure(slope=slope)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self.y = np.maximum(x, x * x.dtype.type(self.slope))
        return self.y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out * np.where(self.y > 0, 1, self.slope).astype(grad_out.dtype)

    def describe(self) -> str:
        return f"slope {self.slope:g}"


def stable_sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` written as ``(1 + tanh(x / 2)) / 2``: the same function, which never
    evaluates ``exp`` of a large number, so ``sigmoid(+-1000)`` is exactly 1 or 0 with no overflow."""
    half = x.dtype.type(0.5)
    return half * (1 + np.tanh(half * x))


@register("activation", "sigmoid", formula="y = 1 / (1 + exp(-x))", gradient="grad_x = grad_y * y * (1 - y)",
          tags=("hidden", "output"), init="xavier")
class Sigmoid(Activation):
    """Logistic function, squashing to (0, 1): ``y = 1 / (1 + exp(-x))``;  ``dy/dx = y * (1 - y)``."""

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self.y = stable_sigmoid(x)
        return self.y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out * self.y * (1 - self.y)


@register("activation", "tanh", formula="y = tanh(x)", gradient="grad_x = grad_y * (1 - y**2)",
          tags=("hidden",), init="xavier")
class Tanh(Activation):
    """Hyperbolic tangent, squashing to (-1, 1): ``y = tanh(x)``;  ``dy/dx = 1 - y**2``."""

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self.y = np.tanh(x)
        return self.y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out * (1 - self.y * self.y)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """``p_i = exp(z_i - max z) / sum_j exp(z_j - max z)`` along ``axis``.

    Subtracting the maximum makes every exponent ``<= 0``: no overflow however large the logits,
    and the largest term is exactly 1, so the sum is never 0.
    """
    exp = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return exp / exp.sum(axis=axis, keepdims=True)


@register("activation", "softmax", formula="y_k = exp(x_k) / sum_j exp(x_j)",
          gradient="grad_x = y * (grad_y - sum_k grad_y_k * y_k)", tags=("output",), init="xavier")
class Softmax(Activation):
    """``y = softmax(x)`` over the last axis: ``x [B, K] -> y [B, K]``, each row sums to 1.

    Backward (the Jacobian-vector product, ``J = diag(y) - y y^T`` per row)::

        grad_in = y * (grad_out - sum(grad_out * y, axis=-1, keepdims=True))

    For training prefer :class:`~digitnet.nn.losses.SoftmaxCrossEntropy` on logits, which fuses
    both into the simpler and more stable ``(p - onehot) / B``.
    """

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self.y = softmax(x)
        return self.y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return self.y * (grad_out - (grad_out * self.y).sum(axis=-1, keepdims=True))


def activation_name(name: str) -> str:
    """The registered name of an activation: ``"Leaky-ReLU"`` / ``"leakyrelu"`` -> ``"leaky_relu"``.

    Raises:
        ConfigError: no such activation.
    """
    return entry("activation", name).name


def activation_layer(name: str) -> Layer:
    """A new activation layer called ``name`` ("relu", "sigmoid", ... any registered activation)."""
    return entry("activation", name).target()
