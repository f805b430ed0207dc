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

from typing import Any

import numpy as np

from digitnet.errors import ConfigError
from digitnet.nn.base import Layer, register_layer


@register_layer
class BatchNorm(Layer):
    """Batch normalisation of ``[B, F]`` or ``[B, C, H, W]`` inputs (see the module docstring).

    Args:
        num_features: ``F`` or ``C``.
        momentum: weight of the current batch in the running statistics (PyTorch's 0.1).
        eps: added to the variance before the square root.
    """

    trainable = True

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        if not isinstance(num_features, int | np.integer) or isinstance(num_features, bool) \
                or num_features < 1:
            raise ConfigError(f"BatchNorm num_features must be a positive integer, got {num_features!r}")
        momentum, eps = float(momentum), float(eps)
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"BatchNorm momentum must be in [0, 1], got {momentum}")
        if not eps > 0.0:
            raise ConfigError(f"BatchNorm eps must be positive, got {eps}")
        self.num_features = int(num_features)
        self.momentum = momentum
        self.eps = eps
        self.params = {"gamma": np.ones(self.num_features, dtype=np.float32),
                       "beta": np.zeros(self.num_features, dtype=np.float32)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.buffers = {"running_mean": np.zeros(self.num_features, dtype=np.float32),
                        "running_var": np.ones(self.num_features, dtype=np.float32)}
        self._x_hat: np.ndarray | None = None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) not in (1, 3) or input_shape[0] != self.num_features:
            raise ConfigError(f"BatchNorm({self.num_features}) expects ({self.num_features},) or "
                              f"({self.num_features}, H, W) per sample, got {list(input_shape)}")
        return tuple(input_shape)

    def _as_3d(self, array: np.ndarray) -> np.ndarray:
        """``[B, F]`` -> ``[B, F, 1]``, ``[B, C, H, W]`` -> ``[B, C, H*W]`` (views): reduce over axes (0, 2)."""
        if array.ndim not in (2, 4) or array.shape[1] != self.num_features:
            raise ConfigError(f"BatchNorm({self.num_features}) expects input [B, {self.num_features}] or "
                              f"[B, {self.num_features}, H, W], got {list(array.shape)}")
        return array.reshape(array.shape[0], self.num_features, -1)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        x3 = self._as_3d(x)
        dtype = np.result_type(x, self.params["gamma"])
        gamma = self.params["gamma"].astype(dtype, copy=False)[:, None]
        beta = self.params["beta"].astype(dtype, copy=False)[:, None]
        y = self.output_buffer("y", x.shape, dtype, training)
        y3 = y.reshape(x3.shape)
        if not training:
            inv_std = 1.0 / np.sqrt(self.buffers["running_var"].astype(dtype) + dtype.type(self.eps))
            scale = gamma * inv_std[:, None]
            shift = beta - self.buffers["running_mean"].astype(dtype)[:, None] * scale
            np.multiply(x3, scale, out=y3)
            y3 += shift
            self._x_hat = None
            return y
        count = x3.shape[0] * x3.shape[2]
        mean = x3.sum(axis=(0, 2)) / count
        x_hat = self.work_buffer("x_hat", x3.shape, dtype)
        np.subtract(x3, mean[:, None], out=x_hat)                        # centred
        var = np.einsum("bfs,bfs->f", x_hat, x_hat) / count               # no squared temporary
        inv_std = 1.0 / np.sqrt(var + dtype.type(self.eps))
        x_hat *= inv_std[:, None]
        np.multiply(x_hat, gamma, out=y3)
        y3 += beta
        self._x_hat, self._inv_std, self._count = x_hat, inv_std, count
        self._update_running(mean, var, count)
        return y

    def _update_running(self, mean: np.ndarray, var: np.ndarray, count: int) -> None:
        momentum = self.momentum
        unbiased = var * (count / max(count - 1, 1))     # a single value has no spread to estimate
        for key, batch_value in (("running_mean", mean), ("running_var", unbiased)):
            running = self.buffers[key]
            running *= running.dtype.type(1.0 - momentum)
            running += (momentum * batch_value).astype(running.dtype)

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        if self._x_hat is None:
            raise RuntimeError("BatchNorm.backward needs a forward(x, training=True) first")
        g3 = grad_out.reshape(self._x_hat.shape)
        x_hat = self._x_hat
        grad_beta = g3.sum(axis=(0, 2))
        grad_gamma = np.einsum("bfs,bfs->f", g3, x_hat)
        self.grads["beta"][...] = grad_beta
        self.grads["gamma"][...] = grad_gamma
        if not self.compute_input_grad:
            return None
        count = self._count
        gamma = self.params["gamma"].astype(g3.dtype, copy=False)
        scale = (gamma * self._inv_std)[:, None]
        # dx = gamma*inv_std * (g - grad_beta/n - x_hat * grad_gamma/n), in place in grad_out
        grad_in = self.work_buffer("grad_in", x_hat.shape, g3.dtype)
        np.multiply(x_hat, (grad_gamma / count)[:, None], out=grad_in)
        np.subtract(g3, grad_in, out=grad_in)
        grad_in -= (grad_beta / count)[:, None]
        grad_in *= scale
        return grad_in.reshape(grad_out.shape)

    def config(self) -> dict[str, Any]:
        return {"type": "BatchNorm", "num_features": self.num_features, "momentum": self.momentum,
                "eps": self.eps}

    def describe(self) -> str:
        return f"{self.num_features} (momentum {self.momentum:g})"

    def release_buffers(self) -> None:
        super().release_buffers()
        self._x_hat = None
