"""Evaluate a model on labelled images: the numbers behind ``digitnet evaluate``."""

from __future__ import annotations

import numpy as np


def evaluate_model(loaded, data, *, noise=0.0, rotate=0.0, thickness=0, min_confidence=0.0, seed=0):
    """Evaluate a loaded model on a labelled Dataset; returns plain JSON types.

    Keys: accuracy, loss (mean cross-entropy of the predicted probabilities), count,
    confusion_matrix [K][K] (rows = true class), per_class (precision/recall/f1/support),
    macro_avg, and with ``min_confidence`` > 0 the coverage (fraction answered with
    confidence >= threshold) and the accuracy on those answered. The damage arguments
    (see :func:`digitnet.robustness.damage`) are applied to the images first.
    """
    from digitnet.metrics import classification_report
    from digitnet.predict import predict_proba_images

    images = data.images
    if noise or rotate or thickness:
        from digitnet.robustness import damage

        images = damage(images, noise=noise, rotate=rotate, thickness=thickness,
                        rng=np.random.default_rng(seed))
    probs = predict_proba_images(loaded.model, images)
    labels = data.labels.astype(np.int64)
    predicted = probs.argmax(axis=1)
    report = classification_report(labels, predicted, loaded.classes)
    eps = np.finfo(np.float32).tiny
    report["loss"] = float(-np.mean(np.log(np.maximum(probs[np.arange(len(labels)), labels], eps))))
    report.update({"model": str(loaded.path), "data": data.name, "classes": loaded.classes,
                   "damage": {"noise": noise, "rotate": rotate, "thickness": thickness}})
    if min_confidence > 0:
        from digitnet.robustness import selective_accuracy

        answered = selective_accuracy(probs, labels, min_confidence)
        report["min_confidence"] = {
            "threshold": min_confidence,
            "coverage": answered["coverage"],
            "accuracy_on_covered": answered["accuracy"],
            "not_sure": answered["total"] - answered["answered"],
        }
    return report
