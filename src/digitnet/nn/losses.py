"""Loss functions: a scalar that says how wrong a batch of outputs is, and its gradient.

A loss object has ``forward(outputs, labels) -> float`` (the mean loss over the batch) and
``backward() -> grad_outputs`` (dL/d outputs, same shape as ``outputs``, with the 1/B of the
mean already inside). ``outputs`` is ``[B, K]``; ``labels`` are integer class indices ``[B]``
in ``0..K-1``. ``forward`` never modifies ``outputs``; the array ``backward`` returns is valid
until the next ``forward`` (cross-entropy reuses one buffer per batch shape), and the model's
backward pass may overwrite it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from digitnet.errors import ConfigError, DataError


class Loss:
    """Base class; see the module docstring for the protocol."""

    name = "loss"

    def __init__(self) -> None:
        self._grad: np.ndarray | None = None

    def forward(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        raise NotImplementedError

    def backward(self) -> np.ndarray:
        """``dL/d outputs`` of the last :meth:`forward`, shape ``[B, K]``."""
        if self._grad is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        return self._grad

    def __call__(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        return self.forward(outputs, labels)

    def config(self) -> dict[str, Any]:
        return {"name": self.name}


def _check_batch(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Validate ``outputs [B, K]`` against integer ``labels [B]`` in ``0..K-1``; returns them as an array."""
    if outputs.ndim != 2:
        raise ConfigError(f"a loss expects outputs [batch, classes], got shape {list(outputs.shape)}")
    labels = np.asarray(labels)
    if labels.shape != (outputs.shape[0],) or labels.dtype.kind not in "iu":
        raise DataError(f"labels must be {outputs.shape[0]} integers, "
                        f"got {labels.dtype} of shape {list(labels.shape)}")
    # unsigned labels (the uint8 of a dataset) cannot be negative: one reduction instead of two
    if labels.size and ((labels.dtype.kind != "u" and labels.min() < 0) or labels.max() >= outputs.shape[1]):
        raise DataError(f"labels must be in 0..{outputs.shape[1] - 1} for {outputs.shape[1]} outputs, "
                        f"got {int(labels.min())}..{int(labels.max())}")
    # uint64 does not mix with intp indices (NumPy would promote to float64); smaller types do, uncopied
    return labels.astype(np.intp) if labels.dtype == np.uint64 else labels


class SoftmaxCrossEntropy(Loss):
    """Softmax and cross-entropy fused, on raw scores (logits).

    With logits ``z [B, K]``, labels ``y [B]`` and targets ``q = (1 - eps) * onehot(y) + eps / K``
    (label smoothing ``eps``; 0 gives plain one-hot)::

        log p = z - logsumexp(z)                  logsumexp(z) = m + log sum exp(z - m), m = max z
        L     = -(1/B) * sum_b sum_k q[b,k] * log p[b,k]
              = -(1/B) * sum_b [(1 - eps) * log p[b,y_b] + eps * mean_k log p[b,k]]
        dL/dz = (p - q) / B                       [B, K]

    Subtracting the row maximum before ``exp`` keeps every exponent <= 0, so logits of +-1e4
    give a finite loss and gradient. Exponents are floored at ``log(sqrt(tiny))`` (about -43.7 in
    float32): ``exp`` of anything lower is below the resolution of the row sum, and the floor keeps
    subnormal numbers (very slow on CPUs) out of the gradient. Fusing avoids the softmax Jacobian.
    """

    name = "cross_entropy"

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = float(label_smoothing)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self._buffer_key: tuple | None = None
        self._buffer_arrays: tuple = ()

    def forward(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        labels = _check_batch(outputs, labels)
        batch, classes = outputs.shape
        dtype = outputs.dtype.type
        # `work` [B, K] is reused across calls: z - max z, then exp(.), then the gradient (p - q) / B
        work, row_vector, ones, true_index, offsets, exp_floor = self._buffers(batch, classes, outputs.dtype)
        # m = max z per row, read at the argmax: argmax + take is ~2x faster than max(axis=1) on rows of 10
        outputs.argmax(axis=1, out=true_index)
        true_index += offsets
        outputs.reshape(-1).take(true_index, out=row_vector)
        np.subtract(outputs, row_vector[:, None], out=work)
        flat_work = work.reshape(-1)
        np.add(offsets, labels, out=true_index)                              # flat index of (b, y_b)
        shifted_true = flat_work.take(true_index)                            # z_y - m
        eps = self.label_smoothing
        # row sums as a product with a vector of ones: BLAS, ~3x faster than sum(axis=1) here
        shifted_mean = (work @ ones) / dtype(classes) if eps else None
        # Floor z - m at log(sqrt(tiny)) (-43.7 in float32) before exp: a smaller exp(.) is far below
        # the resolution of the row sum (>= 1) anyway, and the floor keeps p and the gradient away from
        # subnormal numbers, which make exp ~20x and the next layers' matmuls ~40x slower.
        np.maximum(work, exp_floor, out=work)
        np.exp(work, out=work)
        np.matmul(work, ones, out=row_vector)                                # sum_k exp(z_k - m)
        log_sum_exp = np.log(row_vector)
        # -log p_y = logsumexp(z) - z_y; summed in float64 (float(sum) is ~4x faster than .mean())
        if eps:
            per_sample = log_sum_exp - (dtype(1 - eps) * shifted_true + dtype(eps) * shifted_mean)
        else:
            per_sample = np.subtract(log_sum_exp, shifted_true, out=log_sum_exp)
        loss = float(per_sample.sum(dtype=np.float64)) / batch if batch else float("nan")
        # gradient (p - q) / B = exp(z - m) / (B * sum exp) - q / B, in place
        row_vector *= dtype(batch)
        np.divide(work, row_vector[:, None], out=work)
        if eps:
            work -= dtype(eps / (classes * batch))
            flat_work[true_index] -= dtype((1 - eps) / batch)
        else:
            flat_work[true_index] -= dtype(1.0 / batch)
        self._grad = work
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

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "label_smoothing": self.label_smoothing}


class MeanSquaredError(Loss):
    """Half the squared distance to the one-hot target, averaged over the batch.

    With outputs ``a [B, K]`` (e.g. sigmoid activations) and ``t = onehot(y) [B, K]``::

        L     = (1 / 2B) * sum_b sum_k (a[b,k] - t[b,k])**2
        dL/da = (a - t) / B                       [B, K]

    The loss of a sigmoid network trained as in Nielsen's book (the 1/2 cancels the 2 of the
    derivative).
    """

    name = "mse"

    def forward(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        labels = _check_batch(outputs, labels)
        batch = outputs.shape[0]
        diff = outputs.copy()
        diff[np.arange(batch), labels] -= 1
        loss = 0.5 * float(np.einsum("ij,ij->", diff, diff, dtype=np.float64)) / batch
        diff *= diff.dtype.type(1.0 / batch)
        self._grad = diff
        return loss


LOSSES = {"cross_entropy": SoftmaxCrossEntropy, "mse": MeanSquaredError}
_ALIASES = {"ce": "cross_entropy", "crossentropy": "cross_entropy", "cross-entropy": "cross_entropy",
            "softmax_cross_entropy": "cross_entropy", "mean_squared_error": "mse"}


def make_loss(name: str, label_smoothing: float = 0.0) -> Loss:
    """Build a loss by name: "cross_entropy" (aliases "ce", "cross-entropy") or "mse".

    Raises:
        ConfigError: unknown name, or label smoothing asked for with MSE.
    """
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key == "cross_entropy":
        return SoftmaxCrossEntropy(label_smoothing=label_smoothing)
    if key == "mse":
        if label_smoothing:
            raise ConfigError("label smoothing applies to cross-entropy only")
        return MeanSquaredError()
    raise ConfigError(f"unknown loss {name!r} (choose from {', '.join(LOSSES)})")
