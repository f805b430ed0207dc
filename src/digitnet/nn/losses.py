"""Loss functions: a scalar that says how wrong a batch of outputs is, and its gradient.

A loss object has ``forward(outputs, labels) -> float`` (the mean loss over the batch) and
``backward() -> grad_outputs`` (dL/d outputs, same shape as ``outputs``, with the 1/B of the
mean already inside). ``labels`` are integer class indices ``[B]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from digitnet.errors import ConfigError


class Loss:
    """Base class; see the module docstring for the protocol."""

    name = "loss"

    def forward(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        raise NotImplementedError

    def backward(self) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        return self.forward(outputs, labels)

    def config(self) -> dict[str, Any]:
        return {"name": self.name}


class SoftmaxCrossEntropy(Loss):
    """Softmax and cross-entropy fused, on raw scores (logits).

    With logits ``z [B, K]``, labels ``y [B]`` and targets ``q = (1 - eps) * onehot(y) + eps / K``
    (label smoothing ``eps``; 0 gives plain one-hot)::

        log p = z - logsumexp(z)                  logsumexp(z) = m + log sum exp(z - m), m = max z
        L     = -(1/B) * sum_b sum_k q[b,k] * log p[b,k]
        dL/dz = (p - q) / B

    Subtracting the row maximum before ``exp`` keeps every exponent <= 0, so logits of +-1e4
    give a finite loss and gradient. Fusing avoids the softmax Jacobian entirely.
    """

    name = "cross_entropy"

    def __init__(self, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self._grad: np.ndarray | None = None

    def forward(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        logits = outputs
        batch, classes = logits.shape
        rows = np.arange(batch)
        # shifted = z - max z (a fresh array that becomes the gradient below: no extra allocation)
        shifted = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(shifted)
        sum_exp = probs.sum(axis=1, keepdims=True)
        log_sum_exp = np.log(sum_exp)
        probs /= sum_exp
        log_p_true = shifted[rows, labels] - log_sum_exp[:, 0]
        eps = self.label_smoothing
        if eps:
            mean_log_p = shifted.mean(axis=1) - log_sum_exp[:, 0]
            loss = -((1 - eps) * log_p_true + eps * mean_log_p).mean()
        else:
            loss = -log_p_true.mean()
        # gradient (p - q) / B, computed in place in probs
        if eps:
            probs -= eps / classes
            probs[rows, labels] -= 1 - eps
        else:
            probs[rows, labels] -= 1
        probs *= probs.dtype.type(1.0 / batch)
        self._grad = probs
        return float(loss)

    def backward(self) -> np.ndarray:
        return self._grad

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "label_smoothing": self.label_smoothing}


class MeanSquaredError(Loss):
    """Half the squared distance to the one-hot target, averaged over the batch.

    With outputs ``a [B, K]`` (e.g. sigmoid activations) and ``t = onehot(y)``::

        L     = (1 / 2B) * sum_b sum_k (a[b,k] - t[b,k])**2
        dL/da = (a - t) / B

    The loss of seed 004 (a sigmoid network trained with MSE, as in Nielsen's book).
    """

    name = "mse"

    def forward(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        batch = outputs.shape[0]
        diff = outputs.copy()
        diff[np.arange(batch), labels] -= 1
        loss = 0.5 * float(np.einsum("ij,ij->", diff, diff)) / batch
        diff *= diff.dtype.type(1.0 / batch)
        self._grad = diff
        return loss

    def backward(self) -> np.ndarray:
        return self._grad


LOSSES = {"cross_entropy": SoftmaxCrossEntropy, "mse": MeanSquaredError}


def make_loss(name: str, label_smoothing: float = 0.0) -> Loss:
    """Build a loss by name: "cross_entropy" (alias "ce") or "mse"."""
    key = {"ce": "cross_entropy", "crossentropy": "cross_entropy", "cross-entropy": "cross_entropy"}.get(
        name.lower(), name.lower())
    if key == "cross_entropy":
        return SoftmaxCrossEntropy(label_smoothing=label_smoothing)
    if key == "mse":
        if label_smoothing:
            raise ConfigError("label smoothing applies to cross-entropy only")
        return MeanSquaredError()
    raise ConfigError(f"unknown loss {name!r} (choose from {', '.join(LOSSES)})")
