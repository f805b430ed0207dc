"""Classification metrics: accuracy, the confusion matrix and per-class precision/recall/F1.

For K classes and true/predicted labels ``y_true, y_pred [N]``:

    confusion[i, j] = #{n : y_true[n] = i and y_pred[n] = j}       (rows = true class)
    accuracy        = trace(confusion) / N
    precision_k     = confusion[k, k] / sum_i confusion[i, k]       (of those predicted k, how many are k)
    recall_k        = confusion[k, k] / sum_j confusion[k, j]       (of the true k, how many were found)
    F1_k            = 2 * precision_k * recall_k / (precision_k + recall_k)

A ratio with a zero denominator is reported as 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of predictions equal to the labels (0.0 for empty input)."""
    y_true = np.asarray(y_true)
    if y_true.size == 0:
        return 0.0
    return float(np.mean(y_true == np.asarray(y_pred)))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 ``[K, K]``; ``[i, j]`` counts samples of true class i predicted as j."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(num.shape, dtype=np.float64), where=den > 0)


def per_class_report(confusion: np.ndarray, classes: list[str]) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support of each class, from a confusion matrix."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_pos = np.diag(confusion)
    precision = _ratio(true_pos, confusion.sum(axis=0))
    recall = _ratio(true_pos, confusion.sum(axis=1))
    f1 = _ratio(2 * precision * recall, precision + recall)
    support = confusion.sum(axis=1).astype(np.int64)
    return [
        {"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
    ]


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, the confusion matrix, per-class metrics and their macro averages, as plain JSON types."""
    confusion = confusion_matrix(y_true, y_pred, len(classes))
    per_class = per_class_report(confusion, classes)
    macro = {key: float(np.mean([row[key] for row in per_class])) for key in ("precision", "recall", "f1")}
    return {
        "accuracy": accuracy(y_true, y_pred),
        "count": int(len(np.asarray(y_true))),
        "confusion_matrix": confusion.tolist(),
        "per_class": per_class,
        "macro_avg": macro,
    }
