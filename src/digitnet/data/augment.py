"""Data augmentation: random small distortions of each training batch, the same kind a hand makes.

Every image of a batch gets its own random

- shift: ``(tx, ty)`` pixels, each uniform in ``[-shift, shift]``;
- rotation: angle uniform in ``[-rotate, rotate]`` degrees, about the image centre;
- scaling: factor uniform in ``[1 - scale, 1 + scale]``, about the image centre;
- elastic distortion (Simard, Steinkraus & Platt 2003, "Best practices for convolutional neural
  networks applied to visual document analysis"): two random fields ``u, v ~ U(-1, 1)`` per pixel,
  smoothed by a Gaussian of standard deviation ``elastic_sigma`` and multiplied by
  ``elastic_alpha``, displace every pixel. Small sigma gives random noise, large sigma an almost
  rigid shift; sigma = 4, alpha = 34 are the paper's values for MNIST.

All of it is one backward mapping: output pixel ``p = (x, y)`` reads the input at::

    q = R(-angle) (p - centre - t) / s + centre + alpha * (G_sigma * u, G_sigma * v)(p)

interpolated bilinearly between the 4 neighbouring pixels (outside the image counts as black).
The whole batch is warped at once with array operations (no loop over images); the Gaussian
smoothing is separable (a 1-D convolution along x, then along y, each a small matrix product),
written with NumPy only (docs/SPEED.md gives its cost per batch).

Randomness comes only from the ``rng`` passed to each call, so a seeded training run is
reproducible. With every magnitude 0 the output equals the input.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from digitnet.errors import ConfigError


def gaussian_kernel(sigma: float, truncate: float = 3.0) -> np.ndarray:
    """1-D Gaussian weights ``exp(-k^2 / (2 sigma^2))`` for ``k = -r..r``, summing to 1.

    The radius is ``r = ceil(truncate * sigma)``: beyond 3 sigma the weights are below 1.1% of the centre's.
    """
    radius = max(1, int(math.ceil(truncate * sigma)))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return (weights / weights.sum()).astype(np.float32)


def gaussian_smooth(fields: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth each ``[..., H, W]`` field with a 2-D Gaussian of standard deviation ``sigma`` (pixels).

    The 2-D Gaussian is separable, ``G(x, y) = g(x) g(y)``, so the 2-D convolution is a 1-D
    convolution along W followed by one along H. A 1-D convolution of a length-``n`` signal is a
    linear map, an ``[n, n]`` matrix ``S`` (row ``i`` holds the kernel centred on ``i``), so the
    whole smoothing is two small matrix products: ``S_h @ field @ S_w.T``. Beyond the border the
    field continues as its mirror image. Returns float32 of the same shape.
    """
    out = np.asarray(fields, dtype=np.float32)
    smooth_w = smoothing_matrix(out.shape[-1], sigma)
    smooth_h = smoothing_matrix(out.shape[-2], sigma)
    return np.matmul(smooth_h, np.matmul(out, smooth_w.T))


@lru_cache(maxsize=16)
def smoothing_matrix(size: int, sigma: float) -> np.ndarray:
    """``S [size, size]`` with ``(S @ v)[i] = sum_t g[t] v[mirror(i + t)]``: Gaussian smoothing of a signal.

    ``mirror`` reflects indices that run past an end back inside (``c b a | a b c``), repeating
    for kernels longer than the signal; every row of ``S`` sums to 1. Cached (read-only).
    """
    kernel = gaussian_kernel(sigma).astype(np.float64)
    radius = len(kernel) // 2
    matrix = np.zeros((size, size))
    for t, weight in enumerate(kernel):
        source = np.mod(np.arange(size) + t - radius, 2 * size)
        source = np.where(source >= size, 2 * size - 1 - source, source)
        np.add.at(matrix, (np.arange(size), source), weight)
    matrix = matrix.astype(np.float32)
    matrix.flags.writeable = False
    return matrix


def elastic_displacement(batch: int, height: int, width: int, alpha: float, sigma: float,
                         rng: np.random.Generator) -> np.ndarray:
    """Simard et al.'s random smooth displacement fields: float32 ``[batch, 2, H, W]`` (dx, dy) in pixels.

    ``alpha * G_sigma * U(-1, 1)``: uniform noise per pixel, smoothed, then scaled.
    """
    noise = rng.uniform(-1.0, 1.0, size=(batch, 2, height, width)).astype(np.float32)
    return gaussian_smooth(noise, sigma) * np.float32(alpha)


def affine_coordinates(height: int, width: int, angle_degrees: np.ndarray, scale: np.ndarray,
                       shift_x: np.ndarray, shift_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each output pixel reads the input, for one rotation/scale/shift per image.

    The image content is rotated by ``angle`` (counter-clockwise on screen, degrees), scaled by
    ``scale`` about the centre ``((W-1)/2, (H-1)/2)``, then moved by ``(shift_x, shift_y)`` pixels
    (right, down). Returns source ``x`` and ``y`` coordinates, each float32 ``[B, H, W]``:
    the inverse map ``q = R(-angle) (p - centre - t) / scale + centre``.
    """
    angle = np.deg2rad(np.asarray(angle_degrees, dtype=np.float64))
    inv_scale = 1.0 / np.asarray(scale, dtype=np.float64)
    # rows go down on screen, so a counter-clockwise turn on screen is clockwise in (x, y) maths
    cos = (np.cos(angle) * inv_scale).astype(np.float32)[:, None, None]
    sin = (np.sin(angle) * inv_scale).astype(np.float32)[:, None, None]
    centre_x, centre_y = np.float32((width - 1) / 2), np.float32((height - 1) / 2)
    # p - centre - t for every output pixel: [B, 1, W] and [B, H, 1]
    rel_x = np.arange(width, dtype=np.float32)[None, None, :] - centre_x \
        - np.asarray(shift_x, dtype=np.float32)[:, None, None]
    rel_y = np.arange(height, dtype=np.float32)[None, :, None] - centre_y \
        - np.asarray(shift_y, dtype=np.float32)[:, None, None]
    source_x = cos * rel_x - sin * rel_y + centre_x
    source_y = sin * rel_x + cos * rel_y + centre_y
    return source_x, source_y


def bilinear_sample(images: np.ndarray, source_x: np.ndarray, source_y: np.ndarray) -> np.ndarray:
    """``out[b, y, x] = images[b]`` read at ``(source_x[b, y, x], source_y[b, y, x])``, bilinearly.

    ``images`` ``[B, H, W]`` (any real dtype); coordinates float32 ``[B, H, W]``. Outside the
    image reads 0. Returns float32 ``[B, H, W]``. At integer coordinates this is an exact copy.
    """
    batch, height, width = images.shape
    # two zero rows/columns on every side: every clipped coordinate's 4 neighbours exist and
    # anything at or beyond one pixel outside the image reads only zeros
    padded = np.zeros((batch, height + 4, width + 4), dtype=np.float32)
    padded[:, 2:height + 2, 2:width + 2] = images
    flat = padded.reshape(-1)
    sx = np.clip(source_x, -1.0, np.float32(width)) + np.float32(2)
    sy = np.clip(source_y, -1.0, np.float32(height)) + np.float32(2)
    x0 = np.floor(sx)
    y0 = np.floor(sy)
    wx = sx - x0
    wy = sy - y0
    row = width + 4
    base = (np.arange(batch, dtype=np.int64) * (height + 4) * row)[:, None, None]
    index = base + y0.astype(np.int64) * row + x0.astype(np.int64)      # top-left neighbour
    top = flat[index] * (1 - wx) + flat[index + 1] * wx
    bottom = flat[index + row] * (1 - wx) + flat[index + row + 1] * wx
    return top * (1 - wy) + bottom * wy


class Augmenter:
    """Random shifts, rotations, scalings and elastic distortions of uint8 image batches.

    Args:
        shift: maximum shift in pixels along each axis (uniform in ``[-shift, shift]``).
        rotate: maximum rotation in degrees (uniform in ``[-rotate, rotate]``).
        scale: maximum relative scaling (factor uniform in ``[1 - scale, 1 + scale]``), < 1.
        elastic_alpha: strength of the elastic distortion in pixels (0 = none; the paper: 34).
        elastic_sigma: smoothness of the elastic distortion in pixels (the paper: 4).
        probability: chance that an image is distorted at all (the rest pass unchanged).

    ``augmenter(images_uint8 [B, H, W], rng) -> uint8 [B, H, W]`` is what
    :func:`digitnet.training.fit` calls on each training batch (``augment=``).
    """

    def __init__(self, shift: float = 2.0, rotate: float = 10.0, scale: float = 0.1,
                 elastic_alpha: float = 0.0, elastic_sigma: float = 4.0, probability: float = 1.0) -> None:
        values = {}
        for name, value in (("shift", shift), ("rotate", rotate), ("scale", scale),
                            ("elastic_alpha", elastic_alpha), ("elastic_sigma", elastic_sigma),
                            ("probability", probability)):
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"augment {name} must be a number, got {value!r}") from None
            if not (math.isfinite(number) and number >= 0):
                raise ConfigError(f"augment {name} must be a non-negative number, got {value!r}")
            values[name] = number
        if values["scale"] >= 1:
            raise ConfigError(f"augment scale must be below 1 (a factor in [1 - scale, 1 + scale]), got {scale}")
        if values["probability"] > 1:
            raise ConfigError(f"augment probability must be in [0, 1], got {probability}")
        if values["elastic_alpha"] > 0 and values["elastic_sigma"] <= 0:
            raise ConfigError("augment elastic_sigma must be positive when elastic_alpha is")
        self.shift = values["shift"]
        self.rotate = values["rotate"]
        self.scale = values["scale"]
        self.elastic_alpha = values["elastic_alpha"]
        self.elastic_sigma = values["elastic_sigma"]
        self.probability = values["probability"]

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A distorted copy of ``images`` (uint8 ``[B, H, W]``); the input is not modified."""
        images = np.asarray(images)
        if images.ndim != 3:
            raise ValueError(f"Augmenter expects images [B, H, W], got shape {list(images.shape)}")
        batch, height, width = images.shape
        # draw every random number up front, in a fixed order, so a seed fixes the result
        active = rng.random(batch) < self.probability
        angle = rng.uniform(-self.rotate, self.rotate, batch) * active
        factor = 1.0 + rng.uniform(-self.scale, self.scale, batch) * active
        shift_x = rng.uniform(-self.shift, self.shift, batch) * active
        shift_y = rng.uniform(-self.shift, self.shift, batch) * active
        source_x, source_y = affine_coordinates(height, width, angle, factor, shift_x, shift_y)
        if self.elastic_alpha > 0:
            displacement = elastic_displacement(batch, height, width, self.elastic_alpha,
                                                self.elastic_sigma, rng)
            displacement *= active[:, None, None, None].astype(np.float32)
            source_x = source_x + displacement[:, 0]
            source_y = source_y + displacement[:, 1]
        warped = bilinear_sample(images, source_x, source_y)
        np.clip(np.rint(warped, out=warped), 0, 255, out=warped)
        return warped.astype(images.dtype)

    def config(self) -> dict[str, Any]:
        """The constructor's arguments: ``Augmenter(**augmenter.config())`` rebuilds it."""
        return {"shift": self.shift, "rotate": self.rotate, "scale": self.scale,
                "elastic_alpha": self.elastic_alpha, "elastic_sigma": self.elastic_sigma,
                "probability": self.probability}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.config().items())
        return f"Augmenter({args})"
