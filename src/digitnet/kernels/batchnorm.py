"""The fast twin of BatchNorm: the normalised values and the input gradient in reused buffers."""

from __future__ import annotations

import numpy as np

from digitnet.kernels.buffers import Buffered
from digitnet.kernels.registry import kernel_for
from digitnet.nn.batchnorm import BatchNorm


@kernel_for(BatchNorm)
class FastBatchNorm(Buffered, BatchNorm):
    """:class:`~digitnet.nn.batchnorm.BatchNorm` with the variance as one einsum over the centred
    values (no squared temporary), the running statistics updated in place, and ``dL/dx`` built
    in a reused buffer."""

    cached_attributes = ("_x_hat",)

    def setup(self) -> None:
        self._x_hat: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        x3 = self.as_3d(x)
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
