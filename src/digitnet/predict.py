"""Inference on uint8 images: class probabilities, predictions and top-k lists.

Images are scaled to float32 one chunk at a time (``x = images / 255`` in the model's layout), so
predicting a large file never holds it all as float.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from digitnet.data.batches import images_to_inputs


def predict_proba_images(model, images: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """float32 ``[N, K]`` class probabilities for uint8 images ``[N, 28, 28]``."""
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    chunks = [model.predict_proba(images_to_inputs(images[s:s + batch_size], model.input_shape))
              for s in range(0, len(images), batch_size)]
    if not chunks:
        return np.zeros((0, model.output_shapes()[-1][0]), dtype=np.float32)
    return np.concatenate(chunks)


def top_k(probs: np.ndarray, classes: list[str], k: int = 3) -> list[list[dict[str, Any]]]:
    """For each row of ``probs [N, K]``: the ``k`` most likely classes, most likely first."""
    k = min(k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[{"label": int(j), "class": classes[j], "probability": float(row[j])} for j in idx]
            for row, idx in zip(probs, order, strict=True)]


def describe_predictions(probs: np.ndarray, classes: list[str], k: int = 3) -> list[dict[str, Any]]:
    """One dict per row: label, class name, confidence and the top-k list (JSON-ready)."""
    labels = probs.argmax(axis=1)
    tops = top_k(probs, classes, k)
    return [{"label": int(label), "class": classes[int(label)], "confidence": float(probs[i, label]),
             "top3": tops[i]} for i, label in enumerate(labels)]
