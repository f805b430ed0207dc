"""Small labelled data and a small network for the training tests."""

from __future__ import annotations

import numpy as np

from digitnet.data.dataset import Dataset
from digitnet.nn.sequential import Sequential


def blobs(n=600, seed=0):
    """Three well-separated classes of 28x28 uint8 'images': a bright square in a class-specific corner."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n).astype(np.uint8)
    images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for cls, (r, c) in enumerate([(2, 2), (2, 18), (18, 10)]):
        images[labels == cls, r:r + 8, c:c + 8] = 230
    return Dataset(images, labels, classes=["a", "b", "c"], name="blobs")


def small_model(seed=0, dropout=0.0):
    return Sequential.from_spec("784-16-3", dropout=dropout, rng=np.random.default_rng(seed))
