"""GELU, the Gaussian error linear unit (Hendrycks & Gimpel, 2016), in its tanh approximation."""

from __future__ import annotations

import math

import numpy as np

from digitnet.nn.activations import Activation
from digitnet.nn.registry import register

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
CUBIC = 0.044715


@register("activation", "gelu",
          formula="y = 0.5 * x * (1 + tanh(u)),  u = sqrt(2/pi) * (x + 0.044715 * x**3)",
          gradient="grad_x = grad_y * (0.5 * (1 + t) + 0.5 * x * (1 - t**2) * sqrt(2/pi) * (1 + 3 * 0.044715 * x**2)),"
                   "  t = tanh(u)",
          tags=("hidden",), init="he")
class GELU(Activation):
    """``y = x * Phi(x)`` (Phi: the standard normal's CDF), a smooth ReLU, approximated as

        y = 0.5 * x * (1 + tanh(u)),     u = sqrt(2/pi) * (x + 0.044715 * x**3)

    Its derivative, by the product and chain rules with ``t = tanh(u)``::

        dy/dx = 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * sqrt(2/pi) * (1 + 3 * 0.044715 * x**2)

    Unlike ReLU it is not zero for negative inputs near 0, so such units still learn. Shapes:
    ``x [B, ...] -> y [B, ...]``. Forward keeps ``x`` and ``t`` for backward.
    """

    cached_attributes = ("x", "t")

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self.x = x
        self.t = np.tanh(SQRT_2_OVER_PI * (x + CUBIC * x**3)).astype(x.dtype)
        return 0.5 * x * (1 + self.t)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        x, t = self.x, self.t
        du_dx = SQRT_2_OVER_PI * (1 + 3 * CUBIC * x**2)
        return grad_out * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du_dx).astype(grad_out.dtype)
