"""BatchNorm: normalise each feature (or channel) over the batch, then scale and shift.

One layer handles both layouts:

- ``[B, F]`` (after a Dense layer): statistics per feature, over the B samples;
- ``[B, C, H, W]`` (after a Conv2D): statistics per channel, over the B*H*W positions
  (PyTorch's BatchNorm1d and BatchNorm2d).

Training forward, per feature, with ``n`` values ``x_k`` (``n = B`` or ``B*H*W``)::

    mean    = (1/n) sum_k x_k
    var     = (1/n) sum_k (x_k - mean)^2                 (biased: what the batch is normalised by)
    x_hat_k = (x_k - mean) / sqrt(var + eps)
    y_k     = gamma * x_hat_k + beta

and the running statistics used at inference move towards the batch's (PyTorch's convention)::

    running_mean = (1 - momentum) * running_mean + momentum * mean
    running_var  = (1 - momentum) * running_var  + momentum * var * n / (n - 1)   (unbiased)

Inference forward: ``y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta``.

Backward, given ``g_k = dL/dy_k``::

    dL/dbeta  = sum_k g_k
    dL/dgamma = sum_k g_k * x_hat_k
    dL/dx_k   = gamma / sqrt(var + eps) * (g_k - dL/dbeta / n - x_hat_k * dL/dgamma / n)

(the two subtracted terms are the gradient flowing through ``mean`` and through ``var``, which
both depend on every ``x_k``). The running statistics live in ``buffers`` so model files keep
them; ``gamma`` and ``beta`` are the trained parameters.
"""

from __future__ import annotations

import numpy as np

from digitnet.errors import ConfigError
from digitnet.nn.base import Layer
from digitnet.nn.registry import Setting, register


@register(
    "layer", "BatchNorm",
    formula="y = gamma * (x - mean) / sqrt(var + eps) + beta   (batch statistics; running ones at inference)",
    gradient="grad_x = gamma / sqrt(var + eps) * (g - mean(g) - x_hat * mean(g * x_hat))",
    settings=(Setting("num_features", "int", low=1, help="F or C: the features normalised"),
              Setting("momentum", "float", 0.1, low=0.0, high=1.0, help="weight of a batch in the running statistics"),
              Setting("eps", "float", 1e-5, low=0.0, open_low=True, help="added to the variance")),
)
class BatchNorm(Layer):
    """Batch normalisation of ``[B, F]`` or ``[B, C, H, W]`` inputs (see the module docstring).

    Args:
        num_features: ``F`` or ``C``.
        momentum: weight of the current batch in the running statistics (PyTorch's 0.1).
        eps: added to the variance before the square root.
    """

    cached_attributes = ("x_hat", "inv_std")

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.configure(num_features=num_features, momentum=momentum, eps=eps)
        self.params = {"gamma": np.ones(self.num_features, dtype=np.float32),
                       "beta": np.zeros(self.num_features, dtype=np.float32)}
        self.grads = {name: np.zeros_like(value) for name, value in self.params.items()}
        self.buffers = {"running_mean": np.zeros(self.num_features, dtype=np.float32),
                        "running_var": np.ones(self.num_features, dtype=np.float32)}
        self.x_hat: np.ndarray | None = None
        self.inv_std: np.ndarray | None = None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) not in (1, 3) or input_shape[0] != self.num_features:
            raise ConfigError(f"BatchNorm({self.num_features}) expects ({self.num_features},) or "
                              f"({self.num_features}, H, W) per sample, got {list(input_shape)}")
        return tuple(input_shape)

    def as_3d(self, array: np.ndarray) -> np.ndarray:
        """``[B, F]`` -> ``[B, F, 1]``, ``[B, C, H, W]`` -> ``[B, C, H*W]`` (views): statistics over axes (0, 2)."""
        if array.ndim not in (2, 4) or array.shape[1] != self.num_features:
            raise ConfigError(f"BatchNorm({self.num_features}) expects input [B, {self.num_features}] or "
                              f"[B, {self.num_features}, H, W], got {list(array.shape)}")
        return array.reshape(array.shape[0], self.num_features, -1)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        x3 = self.as_3d(x)
        gamma, beta = self.params["gamma"][:, None], self.params["beta"][:, None]
        if not training:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
            y = gamma * (x3 - mean[:, None]) / np.sqrt(var[:, None] + self.eps) + beta
            return y.reshape(x.shape).astype(x.dtype)
        count = x3.shape[0] * x3.shape[2]
        mean = x3.mean(axis=(0, 2))
        var = ((x3 - mean[:, None]) ** 2).mean(axis=(0, 2))
        self.inv_std = 1 / np.sqrt(var + self.eps)
        self.x_hat = (x3 - mean[:, None]) * self.inv_std[:, None]
        unbiased = var * count / max(count - 1, 1)       # a single value has no spread to estimate
        for key, value in (("running_mean", mean), ("running_var", unbiased)):
            self.buffers[key] = ((1 - self.momentum) * self.buffers[key] + self.momentum * value).astype(np.float32)
        return (gamma * self.x_hat + beta).reshape(x.shape)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self.x_hat is None:
            raise RuntimeError("BatchNorm.backward needs a forward(x, training=True) first")
        g = grad_out.reshape(self.x_hat.shape)
        self.grads["beta"] = g.sum(axis=(0, 2))
        self.grads["gamma"] = (g * self.x_hat).sum(axis=(0, 2))
        count = g.shape[0] * g.shape[2]
        gamma = self.params["gamma"][:, None]
        grad_in = gamma * self.inv_std[:, None] * (
            g - self.grads["beta"][:, None] / count - self.x_hat * self.grads["gamma"][:, None] / count)
        return grad_in.reshape(grad_out.shape)

    def describe(self) -> str:
        return f"{self.num_features} (momentum {self.momentum:g})"
