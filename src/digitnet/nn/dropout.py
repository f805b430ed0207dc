"""Dropout: while training, zero each unit at random so that no unit can rely on another."""

from __future__ import annotations

import numpy as np

from digitnet.nn.base import Layer
from digitnet.nn.registry import Setting, register


@register(
    "layer", "Dropout",
    formula="y = x * mask,  mask = (u >= rate) / (1 - rate),  u ~ U[0, 1)   (training; else y = x)",
    gradient="grad_x = grad_y * mask",
    settings=(Setting("rate", "float", 0.5, low=0.0, high=1.0, open_high=True,
                      help="probability of zeroing a unit"),),
)
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
    cached_attributes = ("mask",)

    def __init__(self, rate: float = 0.5, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        self.configure(rate=rate)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.fixed_mask: np.ndarray | None = None
        self.mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if not training or self.rate == 0.0:
            self.mask = None
            return x
        if self.fixed_mask is not None:
            self.mask = self.fixed_mask.astype(x.dtype)
        else:
            keep = self.rng.random(x.shape, dtype=x.dtype) >= self.rate
            self.mask = keep.astype(x.dtype) / x.dtype.type(1.0 - self.rate)
        return x * self.mask

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out if self.mask is None else grad_out * self.mask

    def describe(self) -> str:
        return f"rate {self.rate:g}"
