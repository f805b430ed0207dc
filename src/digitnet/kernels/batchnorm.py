"""The fast twin of BatchNorm: the normalised values and the input gradient in reused buffers.

Every statistic is per feature (channel), so a training step runs by parts of the features on the
workers: each part computes the sums, the normalisation and the gradients of its own channels. The
parts depend on the shapes only, so the sums come out the same for any thread count.
"""

from __future__ import annotations

import numpy as np

from digitnet.kernels.buffers import Buffered
from digitnet.kernels.parallel import product_parts
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
        x_hat = self.work_buffer("x_hat", x3.shape, dtype)
        mean, var, inv_std = (np.empty(x3.shape[1], dtype) for _ in range(3))

        def features(f: slice) -> None:
            mean[f] = x3[:, f].sum(axis=(0, 2)) / count
            np.subtract(x3[:, f], mean[f, None], out=x_hat[:, f])                  # centred
            var[f] = np.einsum("bfs,bfs->f", x_hat[:, f], x_hat[:, f]) / count     # no squared temporary
            inv_std[f] = 1.0 / np.sqrt(var[f] + dtype.type(self.eps))
            x_hat[:, f] *= inv_std[f, None]
            np.multiply(x_hat[:, f], gamma[f], out=y3[:, f])
            y3[:, f] += beta[f]

        self.workers.run(features, self._parts(x3))
        self._x_hat, self._inv_std, self._count = x_hat, inv_std, count
        self._update_running(mean, var, count)
        return y

    @staticmethod
    def _parts(x3: np.ndarray) -> list[slice]:
        """Parts of the features for a pass over ``x3 [B, F, S]`` (a few passes per element)."""
        return product_parts(x3.shape[1], 0.0, x3.nbytes)

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
        x_hat, count = self._x_hat, self._count
        grad_beta, grad_gamma = self.grads["beta"], self.grads["gamma"]
        gamma = self.params["gamma"].astype(g3.dtype, copy=False)
        scale = (gamma * self._inv_std)[:, None]
        grad_in = self.work_buffer("grad_in", x_hat.shape, g3.dtype) if self.compute_input_grad else None

        def features(f: slice) -> None:
            grad_beta[f] = g3[:, f].sum(axis=(0, 2))
            grad_gamma[f] = np.einsum("bfs,bfs->f", g3[:, f], x_hat[:, f])
            if grad_in is None:
                return
            # dx = gamma*inv_std * (g - grad_beta/n - x_hat * grad_gamma/n)
            part = grad_in[:, f]
            np.multiply(x_hat[:, f], (grad_gamma[f] / count)[:, None], out=part)
            np.subtract(g3[:, f], part, out=part)
            part -= (grad_beta[f] / count)[:, None]
            part *= scale[f]

        self.workers.run(features, self._parts(x_hat))
        return None if grad_in is None else grad_in.reshape(grad_out.shape)
