"""The one in-memory form every data source is loaded into.

A :class:`Dataset` holds images as ``uint8 [N, 28, 28]`` (0 = background, 255 = ink, the MNIST
convention) and labels as ``uint8 [N]``. Keeping uint8 costs 784 bytes an image (47 MB for all of
MNIST's training set) instead of 3136 as float32; batches are scaled to float32 in [0, 1] one at a
time (see :mod:`digitnet.data.batches`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from digitnet.errors import DataError

DIGIT_CLASSES: list[str] = [str(d) for d in range(10)]


@dataclass
class Dataset:
    """Images, labels and class names of one split.

    Attributes:
        images: uint8 array ``[N, H, W]`` (28x28 for MNIST), white ink on black.
        labels: uint8 array ``[N]`` with values in ``range(len(classes))``, or ``None`` for unlabeled
            data (e.g. Kaggle's ``test.csv``).
        classes: class names, index = label.
        name: where the data came from, for messages ("mnist/train", "train.csv", ...).
        source: a longer description of the files, e.g. their paths.
    """

    images: np.ndarray
    labels: np.ndarray | None
    classes: list[str] = field(default_factory=lambda: list(DIGIT_CLASSES))
    name: str = "dataset"
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.images, np.ndarray) or self.images.ndim != 3:
            raise DataError(f"{self.name}: images must be an array [N, H, W], got shape "
                            f"{getattr(self.images, 'shape', None)}")
        if self.images.dtype != np.uint8:
            raise DataError(f"{self.name}: images must be uint8, got {self.images.dtype}")
        if self.labels is not None:
            self.labels = np.asarray(self.labels)
            if self.labels.ndim != 1 or len(self.labels) != len(self.images):
                raise DataError(f"{self.name}: {len(self.images)} images but labels of shape "
                                f"{self.labels.shape}")
            if self.labels.dtype != np.uint8:
                if self.labels.dtype.kind not in "iuf":
                    raise DataError(f"{self.name}: labels must be integers, got dtype {self.labels.dtype}")
                # A cast would silently turn 3.7 into 3 and NaN into garbage: only whole numbers pass.
                if self.labels.dtype.kind == "f" and not np.array_equal(self.labels, np.round(self.labels)):
                    raise DataError(f"{self.name}: labels must be whole numbers")
                if self.labels.size and (self.labels.min() < 0 or self.labels.max() > 255):
                    raise DataError(f"{self.name}: labels out of range")
                self.labels = self.labels.astype(np.uint8)
            if self.labels.size and int(self.labels.max()) >= len(self.classes):
                raise DataError(f"{self.name}: label {int(self.labels.max())} is outside 0-"
                                f"{len(self.classes) - 1}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(H, W)`` of one image."""
        return self.images.shape[1], self.images.shape[2]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: np.ndarray | slice, name: str | None = None) -> Dataset:
        """A new Dataset of the chosen rows (copies with fancy indexing, a view with a slice)."""
        return Dataset(
            images=self.images[indices],
            labels=None if self.labels is None else self.labels[indices],
            classes=list(self.classes),
            name=name or self.name,
            source=self.source,
        )

    def head(self, n: int) -> Dataset:
        """The first ``n`` samples (a view, no copy)."""
        return self.subset(slice(0, n), name=self.name)

    def class_counts(self) -> np.ndarray:
        """int64 ``[num_classes]``: how many samples of each class."""
        if self.labels is None:
            raise DataError(f"{self.name} has no labels")
        return np.bincount(self.labels, minlength=self.num_classes)
