"""Damaged digits and confidence thresholds: how a trained model copes when its inputs get worse.

Three kinds of damage, each on uint8 images ``[N, H, W]`` (white ink on black) and each returning
uint8 of the same shape. Zero damage returns the images unchanged (a copy), so accuracy at zero
damage is exactly the clean accuracy.

Gaussian noise of strength ``sigma`` (a fraction of full intensity)::

    x' = clip(x / 255 + sigma * e, 0, 1) * 255,      e ~ N(0, 1) per pixel, drawn from ``rng``

Rotation by ``theta`` degrees counter-clockwise about the image centre ``(c_r, c_c) = ((H-1)/2, (W-1)/2)``,
by inverse mapping with bilinear interpolation (pixels that come from outside the image are 0)::

    r_src = cos(theta) * (r - c_r) + sin(theta) * (c - c_c) + c_r      (rows grow downward)
    c_src = -sin(theta) * (r - c_r) + cos(theta) * (c - c_c) + c_c
    x'[r, c]       = sum over the 4 neighbours of (r_src, c_src) of weight * x[neighbour]

Stroke thickness ``k`` (an integer): ``k > 0`` applies ``k`` grey-level dilations, ``k < 0`` applies
``|k|`` erosions, each with the 3x3 cross (the pixel and its 4 neighbours)::

    dilate(x)[r, c] = max(x[r, c], x[r-1, c], x[r+1, c], x[r, c-1], x[r, c+1])     (erode: min)

Each dilation widens a stroke by about 2 pixels; each erosion thins it by about 2.

Confidence thresholds (selective prediction): with ``confidence = max_k p[n, k]``, the model answers
only when ``confidence >= t`` and says "not sure" otherwise::

    coverage(t) = #{n : confidence_n >= t} / N
    accuracy(t) = #{n : confidence_n >= t and prediction_n = label_n} / #{n : confidence_n >= t}

At ``t = 0`` the model answers everything: coverage 1 and accuracy = plain accuracy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from digitnet.data.batches import images_to_inputs
from digitnet.errors import ConfigError

#: Damage levels drawn by :func:`robustness_curves` unless told otherwise.
NOISE_LEVELS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
ROTATION_ANGLES = (0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 75.0, 90.0)
THICKNESS_LEVELS = (-2, -1, 0, 1, 2, 3)
#: Confidence thresholds of :func:`coverage_curve` unless told otherwise.
THRESHOLDS = tuple(float(t) for t in np.round(np.linspace(0.0, 1.0, 101), 2))


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ConfigError(f"expected uint8 images [N, H, W], got {images.dtype} {list(images.shape)}")
    return images


def add_noise(images: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian noise of standard deviation ``sigma`` (fraction of full intensity); uint8 out."""
    images = _check_images(images)
    if not sigma >= 0 or not math.isfinite(sigma):
        raise ConfigError(f"noise must be a finite number >= 0, got {sigma}")
    if sigma == 0:
        return images.copy()
    noisy = images.astype(np.float32) + np.float32(sigma * 255.0) * rng.standard_normal(
        images.shape, dtype=np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def rotate_images(images: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate every image ``degrees`` counter-clockwise about its centre (bilinear); uint8 out."""
    images = _check_images(images)
    if not math.isfinite(degrees):
        raise ConfigError(f"rotation must be a finite number of degrees, got {degrees}")
    if degrees % 360 == 0:
        return images.copy()
    n, height, width = images.shape
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    centre_r, centre_c = (height - 1) / 2.0, (width - 1) / 2.0
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    dr, dc = rows - centre_r, cols - centre_c
    # Inverse map: the source point that lands on (r, c). Rows grow downward, so a turn that looks
    # counter-clockwise on screen moves a pixel right of the centre to above it.
    src_r = cos * dr + sin * dc + centre_r
    src_c = -sin * dr + cos * dc + centre_c
    r0, c0 = np.floor(src_r).astype(np.int64), np.floor(src_c).astype(np.int64)
    fr, fc = src_r - r0, src_c - c0
    padded = np.zeros((n, height + 2, width + 2), dtype=np.float32)
    padded[:, 1:-1, 1:-1] = images
    out = np.zeros((n, height, width), dtype=np.float32)
    for dy, dx, weight in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc),
                           (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        # +1 for the zero border; anything further out is clamped onto that border (value 0)
        rr = np.clip(r0 + dy + 1, 0, height + 1)
        cc = np.clip(c0 + dx + 1, 0, width + 1)
        out += padded[:, rr, cc] * weight.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _cross_filter(images: np.ndarray, reduce) -> np.ndarray:
    """``reduce`` (np.maximum or np.minimum) of each pixel and its 4 neighbours; borders padded with 0."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    out = images.copy()
    for shifted in (padded[:, :-2, 1:-1], padded[:, 2:, 1:-1], padded[:, 1:-1, :-2], padded[:, 1:-1, 2:]):
        reduce(out, shifted, out=out)
    return out


def change_thickness(images: np.ndarray, steps: int) -> np.ndarray:
    """Thicken strokes (``steps > 0``: dilations) or thin them (``steps < 0``: erosions); uint8 out."""
    images = _check_images(images)
    if int(steps) != steps:
        raise ConfigError(f"thickness must be a whole number of steps, got {steps}")
    out = images.copy()
    reduce = np.maximum if steps > 0 else np.minimum
    for _ in range(abs(int(steps))):
        out = _cross_filter(out, reduce)
    return out


def damage(images: np.ndarray, *, noise: float = 0.0, rotate: float = 0.0, thickness: int = 0,
           rng: np.random.Generator | None = None) -> np.ndarray:
    """Apply thickness change, then rotation, then noise; uint8 ``[N, H, W]`` in and out.

    Args:
        images: uint8 ``[N, H, W]``, white ink on black.
        noise: Gaussian noise sigma as a fraction of full intensity (0.3 = 30% of 255).
        rotate: degrees counter-clockwise.
        thickness: stroke dilations (> 0) or erosions (< 0).
        rng: generator for the noise; required when ``noise > 0``.
    """
    out = change_thickness(images, thickness) if thickness else _check_images(images).copy()
    if rotate:
        out = rotate_images(out, rotate)
    if noise:
        if rng is None:
            raise ConfigError("damage(noise > 0) needs an explicit numpy Generator")
        out = add_noise(out, noise, rng)
    return out


def _accuracy(model, images: np.ndarray, labels: np.ndarray, batch_size: int = 2000) -> float:
    predictions = model.predict(images_to_inputs(images, model.input_shape), batch_size=batch_size)
    return float(np.mean(predictions == labels)) if len(labels) else float("nan")


def robustness_curves(
    model,
    dataset,
    rng: np.random.Generator,
    *,
    noise_levels: tuple[float, ...] = NOISE_LEVELS,
    angles: tuple[float, ...] = ROTATION_ANGLES,
    thickness_levels: tuple[int, ...] = THICKNESS_LEVELS,
    count: int | None = None,
) -> dict[str, Any]:
    """Accuracy of ``model`` as each kind of damage grows.

    Rotation by ``theta`` is scored as the mean accuracy of turning by ``+theta`` and ``-theta``.
    With ``count`` only the first ``count`` samples are used.

    Returns a JSON-serialisable dict::

        {"count": N, "clean_accuracy": a,
         "noise":     {"levels": [...], "accuracy": [...], "xlabel": ...},
         "rotation":  {"levels": [...], "accuracy": [...], "xlabel": ...},
         "thickness": {"levels": [...], "accuracy": [...], "xlabel": ...}}
    """
    if dataset.labels is None:
        raise ConfigError(f"{dataset.name} has no labels: cannot measure accuracy")
    images, labels = dataset.images, dataset.labels
    if count is not None:
        images, labels = images[:count], labels[:count]
    clean = _accuracy(model, images, labels)

    def score(**kwargs) -> float:
        return clean if not any(kwargs.values()) else _accuracy(model, damage(images, rng=rng, **kwargs),
                                                                 labels)

    rotation = [clean if a == 0 else (score(rotate=a) + score(rotate=-a)) / 2 for a in angles]
    return {
        "count": int(len(labels)),
        "clean_accuracy": clean,
        "noise": {"levels": [float(s) for s in noise_levels],
                  "accuracy": [score(noise=float(s)) for s in noise_levels],
                  "xlabel": "Gaussian noise sigma (fraction of full intensity)"},
        "rotation": {"levels": [float(a) for a in angles], "accuracy": rotation,
                     "xlabel": "rotation (degrees, either direction)"},
        "thickness": {"levels": [int(k) for k in thickness_levels],
                      "accuracy": [score(thickness=int(k)) for k in thickness_levels],
                      "xlabel": "stroke thickness (erosions < 0 < dilations)"},
    }


def selective_accuracy(probs: np.ndarray, labels: np.ndarray, min_confidence: float) -> dict[str, Any]:
    """Answer only when the top probability is >= ``min_confidence``; how often, and how well.

    Returns ``{"min_confidence", "answered", "total", "coverage", "accuracy"}`` where accuracy is
    over the answered samples only (None when nothing is answered).
    """
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ConfigError(f"probabilities [N, K] and labels [N] do not match: {probs.shape} vs {labels.shape}")
    if not 0.0 <= min_confidence <= 1.0:
        raise ConfigError(f"min confidence must be in [0, 1], got {min_confidence}")
    answered = probs.max(axis=1) >= min_confidence
    count = int(np.count_nonzero(answered))
    correct = int(np.count_nonzero(answered & (probs.argmax(axis=1) == labels)))
    total = int(len(labels))
    return {"min_confidence": float(min_confidence), "answered": count, "total": total,
            "coverage": count / total if total else 0.0, "accuracy": correct / count if count else None}


def coverage_curve(probs: np.ndarray, labels: np.ndarray, thresholds: tuple[float, ...] = THRESHOLDS,
                   points: int = 400) -> dict[str, Any]:
    """Coverage and accuracy-on-answered as the confidence threshold rises (see module docstring).

    Returns ``{"thresholds": [...], "coverage": [...], "accuracy": [...], "sorted": {"coverage": [...],
    "accuracy": [...]}}``. The first three are measured at ``thresholds`` (accuracy None where nothing
    is answered). ``sorted`` is the exact curve: with the samples ordered by falling confidence,
    answering the first ``n`` gives coverage ``n/N`` and accuracy ``(correct among them)/n``; it is
    sampled at up to ``points`` values of ``n`` (always including ``n = N``).
    """
    rows = [selective_accuracy(probs, labels, float(t)) for t in thresholds]
    probs, labels = np.asarray(probs), np.asarray(labels)
    total = len(labels)
    order = np.argsort(-probs.max(axis=1), kind="stable")
    hits = np.cumsum(probs.argmax(axis=1)[order] == labels[order])
    answered = np.unique(np.linspace(1, total, min(points, total)).round().astype(np.int64)) if total else []
    return {"thresholds": [float(t) for t in thresholds],
            "coverage": [r["coverage"] for r in rows],
            "accuracy": [r["accuracy"] for r in rows],
            "sorted": {"coverage": [float(n / total) for n in answered],
                       "accuracy": [float(hits[n - 1] / n) for n in answered]}}


def damage_examples(image: np.ndarray, curves: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One uint8 image ``[H, W]`` at every damage level of ``curves`` (for showing what was measured).

    Returns ``{"noise": [L, H, W], "rotation": [L, H, W], "thickness": [L, H, W]}`` (uint8).
    """
    batch = _check_images(np.asarray(image)[None])
    return {
        "noise": np.concatenate([damage(batch, noise=s, rng=rng) for s in curves["noise"]["levels"]]),
        "rotation": np.concatenate([damage(batch, rotate=a) for a in curves["rotation"]["levels"]]),
        "thickness": np.concatenate([damage(batch, thickness=k) for k in curves["thickness"]["levels"]]),
    }
