"""The fast twin of the fused softmax cross-entropy: one reused [B, K] array for every pass."""

from __future__ import annotations

import math

import numpy as np

from digitnet.kernels.registry import kernel_for
from digitnet.nn.losses import SoftmaxCrossEntropy, check_batch


def check_labels(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """:func:`~digitnet.nn.losses.check_batch` with one reduction fewer for the unsigned labels of a
    dataset (they cannot be negative); anything unusual goes to the reference check and its messages."""
    labels = np.asarray(labels)
    if (outputs.ndim == 2 and labels.dtype.kind == "u" and labels.dtype != np.uint64
            and labels.shape == (outputs.shape[0],) and (not labels.size or labels.max() < outputs.shape[1])):
        return labels
    return check_batch(outputs, labels)


@kernel_for(SoftmaxCrossEntropy)
class FastSoftmaxCrossEntropy(SoftmaxCrossEntropy):
    """:class:`~digitnet.nn.losses.SoftmaxCrossEntropy` computed in place.

    ``z - max z``, its exponential and the gradient ``(p - q) / B`` all live in one ``[B, K]``
    array reused from batch to batch, so the returned gradient is valid until the next forward.
    Exponents are floored at ``log(sqrt(tiny))`` (about -43.7 in float32): ``exp`` of anything
    lower is below the resolution of the row sum, and the floor keeps subnormal numbers (very slow
    on CPUs) out of the gradient.
    """

    @classmethod
    def adopt(cls, reference: SoftmaxCrossEntropy) -> FastSoftmaxCrossEntropy:
        fast = object.__new__(cls)
        fast.__dict__.update(reference.__dict__)
        fast._buffer_key, fast._buffer_arrays = None, ()
        return fast

    def forward(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        labels = check_labels(outputs, labels)
        batch, classes = outputs.shape
        dtype = outputs.dtype.type
        # `work` [B, K] is reused across calls: z - max z, then exp(.), then the gradient (p - q) / B
        work, row_vector, ones, true_index, offsets, exp_floor = self._buffers(batch, classes, outputs.dtype)
        # m = max z per row, read at the argmax: for rows of 10, argmax + take beats max(axis=1)
        outputs.argmax(axis=1, out=true_index)
        true_index += offsets
        outputs.reshape(-1).take(true_index, out=row_vector)
        np.subtract(outputs, row_vector[:, None], out=work)
        flat_work = work.reshape(-1)
        np.add(offsets, labels, out=true_index)                              # flat index of (b, y_b)
        shifted_true = flat_work.take(true_index)                            # z_y - m
        eps = self.label_smoothing
        # row sums as a product with a vector of ones: BLAS beats sum(axis=1) on short rows
        shifted_mean = (work @ ones) / dtype(classes) if eps else None
        # Floor z - m at log(sqrt(tiny)) (-43.7 in float32) before exp: a smaller exp(.) is far below
        # the resolution of the row sum (>= 1) anyway, and the floor keeps p and the gradient away from
        # subnormal numbers, which make exp and the next layers' products many times slower.
        np.maximum(work, exp_floor, out=work)
        np.exp(work, out=work)
        np.matmul(work, ones, out=row_vector)                                # sum_k exp(z_k - m)
        log_sum_exp = np.log(row_vector)
        # -log p_y = logsumexp(z) - z_y; summed in float64
        if eps:
            per_sample = log_sum_exp - (dtype(1 - eps) * shifted_true + dtype(eps) * shifted_mean)
        else:
            per_sample = np.subtract(log_sum_exp, shifted_true, out=log_sum_exp)
        # n = B for the mean, 1 for the sum (see digitnet.nn.losses)
        n = batch if self.reduction == "mean" else 1
        loss = float(per_sample.sum(dtype=np.float64)) / n if batch or n == 1 else float("nan")
        # gradient (p - q) / n = exp(z - m) / (n * sum exp) - q / n, in place
        row_vector *= dtype(n)
        np.divide(work, row_vector[:, None], out=work)
        if eps:
            work -= dtype(eps / (classes * n))
            flat_work[true_index] -= dtype((1 - eps) / n)
        else:
            flat_work[true_index] -= dtype(1.0 / n)
        self.grad = work
        return loss

    def _buffers(self, batch: int, classes: int, dtype: np.dtype) -> tuple:
        """Arrays and constants of one batch shape, reused while it holds: work ``[B, K]``, a row
        vector ``[B]``, ones ``[K]``, an index vector ``[B]``, the row offsets ``[0, K, 2K, ...]``
        (flat index of each row's first element) and the exponent floor ``log(sqrt(tiny))``."""
        key = (batch, classes, dtype)
        if self._buffer_key != key:
            self._buffer_key = key
            floor = dtype.type(0.5 * math.log(float(np.finfo(dtype).tiny)))
            self._buffer_arrays = (np.empty((batch, classes), dtype), np.empty(batch, dtype),
                                   np.ones(classes, dtype), np.empty(batch, np.intp),
                                   np.arange(batch, dtype=np.intp) * classes, floor)
        return self._buffer_arrays
