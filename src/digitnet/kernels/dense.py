"""The fast twins of Dense, Dropout and Flatten: outputs in reused buffers, products written in place."""

from __future__ import annotations

import numpy as np

from digitnet.errors import ConfigError
from digitnet.kernels.buffers import Buffered
from digitnet.kernels.registry import kernel_for
from digitnet.nn.dense import Dense
from digitnet.nn.dropout import Dropout


@kernel_for(Dense)
class FastDense(Buffered, Dense):
    """:class:`~digitnet.nn.dense.Dense` with its products written into reused arrays.

    The bias gradient is computed as ``ones @ grad_out`` (one BLAS call) rather than
    ``grad_out.sum(axis=0)``: BLAS runs it faster than NumPy's reduction over the batch axis.
    Large products run in parts on the workers, each writing its own rows of the result: ``x @ W``
    and ``g @ W^T`` by rows of the batch, ``x^T g`` by rows of ``dL/dW`` (input features), so no
    part sums over another's (:func:`~digitnet.kernels.parallel.product_parts`).
    """

    cached_attributes = ("x",)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        weights = self.params["weights"]
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ConfigError(f"Dense expects input [B, {self.in_features}], got {list(x.shape)}")
        dtype = x.dtype if x.dtype == weights.dtype else np.result_type(x, weights)
        y = self.output_buffer("y", (x.shape[0], self.out_features), dtype, training)
        bias = self.params["bias"]
        parts = self._parts(len(x), len(x))
        if len(parts) > 1:
            def rows_of(rows: slice) -> None:
                np.matmul(x[rows], weights, out=y[rows])
                y[rows] += bias

            self.workers.run(rows_of, parts)
        else:                             # the common small case, without the parts' bookkeeping
            np.matmul(x, weights, out=y)
            y += bias
        self.x = x
        return y

    def _parts(self, rows: int, batch: int) -> list[slice]:
        """Parts of ``rows`` for one of the layer's products over a batch of ``batch`` (shapes only)."""
        return self.workers.product_parts(rows, 2.0 * batch * self.in_features * self.out_features)

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        weights, x, grad_weights = self.params["weights"], self.x, self.grads["weights"]
        np.matmul(self._ones(grad_out.shape[0], grad_out.dtype), grad_out, out=self.grads["bias"])
        grad_in = None
        if self.compute_input_grad:
            grad_in = self.work_buffer("grad_in", (grad_out.shape[0], self.in_features), grad_out.dtype)
        features = self._parts(self.in_features, len(x))
        images = self._parts(len(grad_out), len(grad_out)) if grad_in is not None else []
        if len(features) > 1 or len(images) > 1:
            # both products in one hand-over: the weight gradient's parts, then the input gradient's
            def part(job: tuple[str, slice]) -> None:
                kind, rows = job
                if kind == "weights":
                    np.matmul(x[:, rows].T, grad_out, out=grad_weights[rows])
                else:
                    np.matmul(grad_out[rows], weights.T, out=grad_in[rows])

            self.workers.run(part, [("weights", rows) for rows in features] + [("inputs", rows) for rows in images])
            return grad_in
        np.matmul(x.T, grad_out, out=grad_weights)
        if grad_in is not None:
            np.matmul(grad_out, weights.T, out=grad_in)
        return grad_in

    def _ones(self, batch: int, dtype: np.dtype) -> np.ndarray:
        """A reused vector of ``batch`` ones (for the bias gradient)."""
        ones = self._work.get("ones")
        if ones is None or ones.shape != (batch,) or ones.dtype != dtype:
            ones = self._work["ones"] = np.ones(batch, dtype=dtype)
        return ones


@kernel_for(Dropout)
class FastDropout(Buffered, Dropout):
    """:class:`~digitnet.nn.dropout.Dropout` with the mask built in place in a reused buffer."""

    cached_attributes = ("mask",)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if not training or self.rate == 0.0:
            self.mask = None
            return x
        if self.fixed_mask is not None:
            mask = self.fixed_mask.astype(x.dtype, copy=False)
        else:
            mask = self.work_buffer("mask", x.shape, x.dtype)
            self.rng.random(dtype=x.dtype, out=mask)
            # mask <- (u >= rate) / (1 - rate), computed in place
            np.greater_equal(mask, self.rate, out=mask, casting="unsafe")
            mask *= x.dtype.type(1.0 / (1.0 - self.rate))
        self.mask = mask
        y = self.output_buffer("y", x.shape, x.dtype, training)
        np.multiply(x, mask, out=y)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self.mask is None:
            return grad_out
        grad_out *= self.mask
        return grad_out
