"""Fully connected building blocks: Dense, Dropout and Flatten."""

from __future__ import annotations

from typing import Any

import numpy as np

from digitnet.errors import ConfigError
from digitnet.nn.base import Layer, register_layer
from digitnet.nn.init import INITIALIZERS, init_weights


@register_layer
class Dense(Layer):
    """A fully connected (affine) layer.

    Forward::

        y = x @ weights + bias          x [B, in_features], weights [in_features, out_features],
                                        bias [out_features], y [B, out_features]

    Backward, given ``grad_out = dL/dy`` of shape ``[B, out_features]``::

        grad_weights = x.T @ grad_out           [in_features, out_features]
        grad_bias    = grad_out.sum(axis=0)     [out_features]
        grad_in      = grad_out @ weights.T     [B, in_features]

    The batch mean (the 1/B) is already inside ``grad_out`` (the loss divides by B).

    Args:
        in_features, out_features: the sizes ``n_in`` and ``n_out``.
        init: how the weights are drawn (see :mod:`digitnet.nn.init`): ``"he"`` (``N(0, 2/n_in)``,
            for ReLU), ``"xavier"`` (``U(-a, a)``, ``a = sqrt(6/(n_in+n_out))``, for sigmoid/tanh)
            or ``"lecun"`` (``N(0, 1/n_in)``). The bias starts at zero.
        rng: the generator the weights are drawn from.
    """

    trainable = True
    needs_rng = True
    cached_attributes = ("_x",)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        init: str = "he",
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        if int(in_features) < 1 or int(out_features) < 1:
            raise ConfigError(f"Dense needs positive sizes, got {in_features} -> {out_features}")
        if init not in INITIALIZERS:
            raise ConfigError(f"unknown initialisation {init!r} (choose from {', '.join(INITIALIZERS)})")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.init = init
        rng = rng if rng is not None else np.random.default_rng(0)
        self.params = {
            "weights": init_weights((self.in_features, self.out_features), self.in_features,
                                    self.out_features, init, rng),
            "bias": np.zeros(self.out_features, dtype=np.float32),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        weights = self.params["weights"]
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ConfigError(f"Dense expects input [B, {self.in_features}], got {list(x.shape)}")
        dtype = x.dtype if x.dtype == weights.dtype else np.result_type(x, weights)
        y = self.output_buffer("y", (x.shape[0], self.out_features), dtype, training)
        np.matmul(x, weights, out=y)
        y += self.params["bias"]
        self._x = x
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        weights = self.params["weights"]
        np.matmul(self._x.T, grad_out, out=self.grads["weights"])
        # the column sums as ones @ grad_out: one BLAS call, 2-4x faster than grad_out.sum(axis=0)
        np.matmul(self._ones(grad_out.shape[0], grad_out.dtype), grad_out, out=self.grads["bias"])
        if not self.compute_input_grad:
            return None
        grad_in = self.work_buffer("grad_in", (grad_out.shape[0], self.in_features), grad_out.dtype)
        np.matmul(grad_out, weights.T, out=grad_in)
        return grad_in

    def _ones(self, batch: int, dtype: np.dtype) -> np.ndarray:
        """A reused vector of ``batch`` ones (for the bias gradient)."""
        ones = self._work.get("ones")
        if ones is None or ones.shape != (batch,) or ones.dtype != dtype:
            ones = self._work["ones"] = np.ones(batch, dtype=dtype)
        return ones

    def config(self) -> dict[str, Any]:
        return {"type": "Dense", "in_features": self.in_features, "out_features": self.out_features,
                "init": self.init}

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if tuple(input_shape) != (self.in_features,):
            raise ConfigError(f"Dense expects {self.in_features} inputs per sample but gets shape "
                              f"{list(input_shape)}")
        return (self.out_features,)

    def describe(self) -> str:
        return f"{self.in_features}->{self.out_features} ({self.init})"


@register_layer
class Dropout(Layer):
    """Inverted dropout: zero each unit with probability ``rate`` while training.

    Forward (training)::

        mask = (u >= rate) / (1 - rate),   u ~ U[0, 1)  of the shape of x
        y = x * mask

    Scaling the kept units by 1/(1-rate) keeps the expected activation unchanged, so inference
    is the identity (no rescaling at test time). Backward: ``grad_in = grad_out * mask``.
    Shapes: ``x``, ``mask``, ``y`` all ``[B, ...]``; ``rate = 0`` is the identity too.

    ``fixed_mask``, when set, is used as ``mask`` instead of a random one (for gradient checks):
    it must be the already scaled mask, with values ``0`` or ``1 / (1 - rate)``, of the shape of x.
    """

    needs_rng = True
    cached_attributes = ("_mask",)

    def __init__(self, rate: float = 0.5, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        rate = float(rate)
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.fixed_mask: np.ndarray | None = None
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if not training or self.rate == 0.0:
            self._mask = None
            return x
        if self.fixed_mask is not None:
            mask = self.fixed_mask.astype(x.dtype, copy=False)
        else:
            mask = self.work_buffer("mask", x.shape, x.dtype)
            self.rng.random(dtype=x.dtype, out=mask)
            # mask <- (u >= rate) / (1 - rate), computed in place
            np.greater_equal(mask, self.rate, out=mask, casting="unsafe")
            mask *= x.dtype.type(1.0 / (1.0 - self.rate))
        self._mask = mask
        y = self.output_buffer("y", x.shape, x.dtype, training)
        np.multiply(x, mask, out=y)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self._mask is None:
            return grad_out
        grad_out *= self._mask
        return grad_out

    def config(self) -> dict[str, Any]:
        return {"type": "Dropout", "rate": self.rate}

    def describe(self) -> str:
        return f"rate {self.rate:g}"


@register_layer
class Flatten(Layer):
    """Reshape ``[B, d1, d2, ...]`` to ``[B, d1*d2*...]``; backward reshapes the gradient back."""

    def __init__(self) -> None:
        super().__init__()
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._shape = x.shape
        # the explicit size (not -1) also works for an empty batch
        return x.reshape(x.shape[0], int(np.prod(x.shape[1:])))

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out.reshape(self._shape)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (int(np.prod(input_shape)),)
