"""Turn uint8 images into the float32 inputs of a model.

``x = images / 255`` as float32, in the model's layout. Training does it one batch at a time
(:mod:`digitnet.training.loop`), so the whole training set is never held as float (60,000 x 784 x 4
bytes = 188 MB, or 376 MB as float64).
"""

from __future__ import annotations

import math

import numpy as np

from digitnet.errors import DataError

SCALE = np.float32(1.0 / 255.0)


def to_float(images: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 ``[B, ...]`` -> float32 in [0, 1], same shape (written into ``out`` when given)."""
    if out is None:
        out = np.empty(images.shape, dtype=np.float32)
    np.multiply(images, SCALE, out=out, casting="unsafe")
    return out


def images_to_inputs(images: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """uint8 images ``[N, H, W]`` -> float32 in [0, 1] in a model's layout.

    ``input_shape`` is one sample's shape as the model expects it: ``(H*W,)`` gives ``[N, H*W]``
    (MLP), ``(1, H, W)`` gives ``[N, 1, H, W]`` (CNN, NCHW).
    """
    images = np.asarray(images)
    if math.prod(images.shape[1:]) != math.prod(input_shape):
        size = "x".join(str(d) for d in images.shape[1:])
        raise DataError(f"images of {size} pixels do not fit a model whose input is "
                        f"{'x'.join(str(d) for d in input_shape)} (MNIST models read 28x28 images)")
    x = to_float(images)
    return x.reshape(len(x), *input_shape)
