"""Losses: one number that says how wrong a batch of outputs is, and its gradient.

A loss has ``forward(outputs, labels) -> float`` and ``backward() -> grad_outputs`` (``dL/d outputs``,
the shape of ``outputs``). ``outputs`` is ``[B, K]``; ``labels`` are class indices ``[B]`` in ``0..K-1``.

``reduction`` says how the per-sample losses ``l_b`` make the batch's loss:

    "mean":  L = (1/B) * sum_b l_b        (the default; the step size does not depend on B)
    "sum":   L = sum_b l_b                (the gradient is B times larger: lr_sum = lr_mean / B)

so gradient descent on the sum at rate ``lr`` takes exactly the steps of the mean at ``lr * B``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from digitnet.errors import ConfigError, DataError
from digitnet.nn.registry import Setting, register

REDUCTION = Setting("reduction", "str", "mean", choices=("mean", "sum"),
                    help="average the per-image losses over the batch, or add them up")


class Loss:
    """Base class; see the module docstring for the protocol."""

    def __init__(self, reduction: str = "mean") -> None:
        self.reduction = REDUCTION.check(reduction, "loss")
        self.grad: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self.registry_entry.name

    def forward(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        raise NotImplementedError

    def backward(self) -> np.ndarray:
        """``dL/d outputs`` of the last :meth:`forward`, shape ``[B, K]``."""
        if self.grad is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        return self.grad

    def __call__(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        return self.forward(outputs, labels)

    def scale(self, batch: int) -> float:
        """The factor on the summed per-sample losses: ``1/B`` for the mean, ``1`` for the sum."""
        return 1.0 / batch if self.reduction == "mean" else 1.0

    def per_sample(self, value: float, batch: int) -> float:
        """The mean per-sample loss of a batch whose :meth:`forward` gave ``value``: what curves and
        evaluations report, so that they do not depend on the reduction or the batch size."""
        return value if self.reduction == "mean" else value / max(batch, 1)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **{s.name: getattr(self, s.name) for s in self.registry_entry.settings}}


def check_batch(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Validate ``outputs [B, K]`` against integer ``labels [B]`` in ``0..K-1``; returns the labels as an array."""
    if outputs.ndim != 2:
        raise ConfigError(f"a loss expects outputs [batch, classes], got shape {list(outputs.shape)}")
    labels = np.asarray(labels)
    if labels.shape != (outputs.shape[0],) or labels.dtype.kind not in "iu":
        raise DataError(f"labels must be {outputs.shape[0]} integers, "
                        f"got {labels.dtype} of shape {list(labels.shape)}")
    if labels.size and (labels.min() < 0 or labels.max() >= outputs.shape[1]):
        raise DataError(f"labels must be in 0..{outputs.shape[1] - 1} for {outputs.shape[1]} outputs, "
                        f"got {int(labels.min())}..{int(labels.max())}")
    # uint64 does not mix with intp indices (NumPy would promote to float64)
    return labels.astype(np.intp) if labels.dtype == np.uint64 else labels


def one_hot(labels: np.ndarray, classes: int, dtype: np.dtype) -> np.ndarray:
    """``[B, K]`` with a 1 in column ``labels[b]`` of row ``b`` and 0 elsewhere."""
    return np.eye(classes, dtype=dtype)[labels]


@register("loss", "cross_entropy",
          formula="L = -(1/B) sum_b sum_k q[b,k] * log softmax(z)[b,k],  q = (1 - eps) * onehot(y) + eps / K",
          gradient="dL/dz = (softmax(z) - q) / B",
          settings=(Setting("label_smoothing", "float", 0.0, low=0.0, high=1.0, open_high=True,
                            help="eps: move this much of the target onto the other classes"), REDUCTION))
class SoftmaxCrossEntropy(Loss):
    """Softmax and cross-entropy fused, on raw scores (logits).

    With logits ``z [B, K]``, labels ``y [B]`` and targets ``q = (1 - eps) * onehot(y) + eps / K``
    (label smoothing ``eps``; 0 gives plain one-hot)::

        log p = z - logsumexp(z)            logsumexp(z) = m + log sum_k exp(z_k - m),  m = max_k z_k
        L     = -(1/B) * sum_b sum_k q[b,k] * log p[b,k]
        dL/dz = (p - q) / B                 [B, K]

    (without the ``1/B`` for ``reduction="sum"``). Subtracting the row maximum keeps every
    exponent ``<= 0``, so logits of +-1e4 give a finite loss and gradient. Fusing the two avoids
    the softmax's Jacobian: the gradient is simply the probabilities minus the targets.
    """

    def __init__(self, label_smoothing: float = 0.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.label_smoothing = self.registry_entry.setting("label_smoothing").check(label_smoothing, "cross_entropy")

    def forward(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        labels = check_batch(outputs, labels)
        batch, classes = outputs.shape
        eps = self.label_smoothing
        shifted = outputs - outputs.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        targets = (1 - eps) * one_hot(labels, classes, outputs.dtype) + eps / classes
        scale = self.scale(batch) if batch or self.reduction == "sum" else float("nan")
        self.grad = ((np.exp(log_p) - targets) * scale).astype(outputs.dtype)
        return -float((targets * log_p).sum(dtype=np.float64)) * scale


@register("loss", "mse", formula="L = (1/2B) sum_b sum_k (a[b,k] - onehot(y)[b,k])**2",
          gradient="dL/da = (a - onehot(y)) / B", settings=(REDUCTION,))
class MeanSquaredError(Loss):
    """Half the squared distance to the one-hot target, averaged over the batch.

    With outputs ``a [B, K]`` (e.g. sigmoid activations) and ``t = onehot(y) [B, K]``::

        L     = (1 / 2B) * sum_b sum_k (a[b,k] - t[b,k])**2
        dL/da = (a - t) / B                       [B, K]

    (without the ``1/B`` for ``reduction="sum"``). The loss of a sigmoid network trained as in
    Nielsen's book: the 1/2 cancels the 2 of the derivative.
    """

    def forward(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        labels = check_batch(outputs, labels)
        batch, classes = outputs.shape
        diff = outputs - one_hot(labels, classes, outputs.dtype)
        scale = self.scale(batch) if batch or self.reduction == "sum" else float("nan")
        self.grad = (diff * scale).astype(outputs.dtype)
        return 0.5 * float((diff * diff).sum(dtype=np.float64)) * scale


def make_loss(name: str, label_smoothing: float = 0.0, reduction: str = "mean") -> Loss:
    """Build a registered loss by name ("cross_entropy", "mse"; "crossentropy", "ce" also work).

    Raises:
        ConfigError: unknown name, or a setting the loss does not have (label smoothing with MSE).
    """
    from digitnet.nn.registry import entry

    key = {"ce": "cross_entropy", "softmax_cross_entropy": "cross_entropy",
           "mean_squared_error": "mse"}.get(str(name).strip().lower(), name)
    found = entry("loss", key)
    settings = {"reduction": reduction}
    if label_smoothing:
        if found.setting("label_smoothing") is None:
            raise ConfigError(f"label smoothing applies to cross-entropy only, not {found.name}")
        settings["label_smoothing"] = label_smoothing
    return found.target(**settings)
