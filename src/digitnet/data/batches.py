"""Turn a uint8 image store into float32 mini-batches.

``x = images[idx] / 255`` as float32, one batch at a time, so the whole training set is never
held as float (60,000 x 784 x 4 bytes = 188 MB, or 376 MB as float64). The shuffled order comes
from an explicit :class:`numpy.random.Generator`, which makes every epoch reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from digitnet.errors import DataError

SCALE = np.float32(1.0 / 255.0)


def to_float(images: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 ``[B, ...]`` -> float32 in [0, 1], same shape (written into ``out`` when given)."""
    if out is None:
        out = np.empty(images.shape, dtype=np.float32)
    np.multiply(images, SCALE, out=out, casting="unsafe")
    return out


def flat_images(images: np.ndarray) -> np.ndarray:
    """``[N, H, W]`` -> ``[N, H*W]`` as a view (no copy for contiguous stores)."""
    return images.reshape(len(images), -1)


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


def iterate_batches(
    images: np.ndarray,
    labels: np.ndarray | None,
    batch_size: int,
    rng: np.random.Generator | None = None,
    *,
    shuffle: bool = True,
    layout: str = "flat",
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Yield ``(x, y)`` batches.

    Args:
        images: uint8 ``[N, H, W]``.
        labels: uint8 ``[N]`` or None.
        batch_size: samples per batch; the last batch may be smaller unless ``drop_last``.
        rng: shuffles the order once per call (one call = one epoch); required when ``shuffle``.
        layout: ``"flat"`` gives x float32 ``[B, H*W]`` (MLP), ``"nchw"`` gives ``[B, 1, H, W]`` (CNN).

    Yields:
        x float32 in [0, 1] and y uint8 ``[B]`` (or None).
    """
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    if layout not in ("flat", "nchw"):
        raise ValueError(f"layout must be 'flat' or 'nchw', got {layout!r}")
    n = len(images)
    if shuffle:
        if rng is None:
            raise ValueError("iterate_batches(shuffle=True) needs an explicit numpy Generator")
        order = rng.permutation(n)
    else:
        order = None
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if drop_last and stop - start < batch_size:
            break
        if order is None:
            xb, yb = images[start:stop], None if labels is None else labels[start:stop]
        else:
            idx = order[start:stop]
            xb = images.take(idx, axis=0)
            yb = None if labels is None else labels.take(idx)
        x = to_float(xb)
        x = x.reshape(len(x), -1) if layout == "flat" else x.reshape(len(x), 1, *images.shape[1:])
        yield x, yb
