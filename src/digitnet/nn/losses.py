"""Loss functions: a scalar that says how wrong a batch of outputs is, and its gradient.

A loss object has ``forward(outputs, labels) -> float`` (the mean loss over the batch) and
``backward() -> grad_outputs`` (dL/d outputs, same shape as ``outputs``, with the 1/B of the
mean already inside). ``outputs`` is ``[B, K]``; ``labels`` are integer class indices ``[B]``
in ``0..K-1``. ``forward`` never modifies ``outputs``; the array ``backward`` returns is a new
one per ``forward`` that the model's backward pass may overwrite.
"""

from __future__ import annotations

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
    """Validate ``outputs [B, K]`` against integer ``labels [B]`` in ``0..K-1``; returns labels as intp."""
    if outputs.ndim != 2:
        raise ConfigError(f"a loss expects outputs [batch, classes], got shape {list(outputs.shape)}")
    labels = np.asarray(labels)
    if labels.shape != (outputs.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels must be {outputs.shape[0]} integers, "
                        f"got {labels.dtype} of shape {list(labels.shape)}")
    if labels.size and (labels.min() < 0 or labels.max() >= outputs.shape[1]):
        raise DataError(f"labels must be in 0..{outputs.shape[1] - 1} for {outputs.shape[1]} outputs, "
                        f"got {int(labels.min())}..{int(labels.max())}")
    return labels.astype(np.intp, copy=False)


class SoftmaxCrossEntropy(Loss):
    """Softmax and cross-entropy fused, on raw scores (logits).

    With logits ``z [B, K]``, labels ``y [B]`` and targets ``q = (1 - eps) * onehot(y) + eps / K``
    (label smoothing ``eps``; 0 gives plain one-hot)::

        log p = z - logsumexp(z)                  logsumexp(z) = m + log sum exp(z - m), m = max z
        L     = -(1/B) * sum_b sum_k q[b,k] * log p[b,k]
              = -(1/B) * sum_b [(1 - eps) * log p[b,y_b] + eps * mean_k log p[b,k]]
        dL/dz = (p - q) / B                       [B, K]

    Subtracting the row maximum before ``exp`` keeps every exponent <= 0, so logits of +-1e4
    give a finite loss and gradient (``exp`` of a very negative number underflows to 0, which is
    the right answer). Fusing avoids the softmax Jacobian entirely.
    """

    name = "cross_entropy"

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = float(label_smoothing)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")

    def forward(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        labels = _check_batch(outputs, labels)
        batch, classes = outputs.shape
        rows = np.arange(batch)
        # z - max z: the one [B, K] array of this method; it becomes exp(.), then p, then the gradient
        work = outputs - outputs.max(axis=1, keepdims=True)
        shifted_true = work[rows, labels]
        eps = self.label_smoothing
        shifted_mean = work.mean(axis=1) if eps else None
        np.exp(work, out=work)
        sum_exp = work.sum(axis=1)
        log_sum_exp = np.log(sum_exp)
        log_p_true = shifted_true - log_sum_exp
        if eps:
            loss = -((1 - eps) * log_p_true + eps * (shifted_mean - log_sum_exp)).mean()
        else:
            loss = -log_p_true.mean()
        work /= sum_exp[:, None]                    # p = softmax(z)
        # gradient (p - q) / B, in place
        if eps:
            work -= work.dtype.type(eps / classes)
            work[rows, labels] -= work.dtype.type(1 - eps)
        else:
            work[rows, labels] -= 1
        work *= work.dtype.type(1.0 / batch)
        self._grad = work
        return float(loss)

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
