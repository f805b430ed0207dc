"""Split a dataset into a training part and a validation part, reproducibly.

MNIST has no validation split; the usual practice is to hold out part of the 60,000 training images
(e.g. 5,000 or 10%) to choose hyperparameters and stop early, and keep the test set for the end.
"""

from __future__ import annotations

import numpy as np

from digitnet.data.dataset import Dataset
from digitnet.errors import ConfigError, DataError


def _stratified_counts(class_counts: np.ndarray, n_val: int) -> np.ndarray:
    """How many of each class go to validation: proportional, summing exactly to ``n_val``.

    Largest-remainder rounding: every class gets floor(share), and the samples left over go to the
    classes with the largest fractional parts (ties to the lower class index, so it is deterministic).
    """
    total = int(class_counts.sum())
    if total == 0:
        return np.zeros_like(class_counts)
    share = class_counts * (n_val / total)
    counts = np.floor(share).astype(np.int64)
    left = n_val - int(counts.sum())
    order = np.argsort(-(share - counts), kind="stable")
    counts[order[:left]] += 1
    return np.minimum(counts, class_counts)


def train_val_split(dataset: Dataset, val_fraction: float, rng: np.random.Generator,
                    stratified: bool = True) -> tuple[Dataset, Dataset]:
    """Split ``dataset`` into ``(train, val)``.

    Args:
        dataset: images uint8 ``[N, H, W]``, labels uint8 ``[N]``.
        val_fraction: share of samples held out, in [0, 1); ``round(val_fraction * N)`` samples.
        rng: the explicit generator that picks the samples (same seed, same split).
        stratified: keep each class's proportion in both parts (needs labels).

    Returns:
        Two new Datasets (copies); each keeps the original order of its samples. Names get
        ``":train"`` and ``":val"`` appended.

    Raises:
        ConfigError: ``val_fraction`` outside [0, 1).
        DataError: ``stratified=True`` on a dataset without labels.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError("train_val_split needs an explicit numpy.random.Generator, e.g. "
                        "np.random.default_rng(seed)")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"validation fraction must be in [0, 1), got {val_fraction}")
    n = len(dataset)
    n_val = int(np.floor(val_fraction * n + 0.5))
    if stratified:
        if dataset.labels is None:
            raise DataError(f"{dataset.name} has no labels, so it cannot be split by class; "
                            "use stratified=False")
        per_class = _stratified_counts(dataset.class_counts(), n_val)
        chosen = [rng.permutation(np.flatnonzero(dataset.labels == c))[:k]
                  for c, k in enumerate(per_class) if k]
        val_idx = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
    else:
        val_idx = rng.permutation(n)[:n_val]
    in_val = np.zeros(n, dtype=bool)
    in_val[val_idx] = True
    train = dataset.subset(np.flatnonzero(~in_val), name=f"{dataset.name}:train")
    val = dataset.subset(np.flatnonzero(in_val), name=f"{dataset.name}:val")
    return train, val
