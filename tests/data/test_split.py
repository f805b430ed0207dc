"""train_val_split: sizes, disjointness, stratification, reproducibility, bad arguments."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digitnet.data import Dataset
from digitnet.data.split import train_val_split
from digitnet.errors import ConfigError, DataError


def _dataset(labels) -> Dataset:
    labels = np.asarray(labels, dtype=np.uint8)
    images = np.zeros((len(labels), 2, 2), dtype=np.uint8)
    images[:, 0, 0] = np.arange(len(labels)) % 256  # lets a test tell samples apart
    images[:, 0, 1] = np.arange(len(labels)) // 256
    return Dataset(images, labels, name="toy")


def _ids(data: Dataset) -> np.ndarray:
    return data.images[:, 0, 0].astype(int) + 256 * data.images[:, 0, 1].astype(int)


def test_sizes_disjoint_and_complete(rng):
    data = _dataset(np.arange(1000) % 10)
    train, val = train_val_split(data, 0.1, rng)
    assert len(train) == 900 and len(val) == 100
    ids_train, ids_val = _ids(train), _ids(val)
    assert not set(ids_train) & set(ids_val)
    assert sorted([*ids_train, *ids_val]) == list(range(1000))
    assert (np.diff(ids_train) > 0).all() and (np.diff(ids_val) > 0).all()  # original order kept
    assert train.name == "toy:train" and val.name == "toy:val"


def test_stratified_keeps_class_proportions(rng):
    labels = np.repeat(np.arange(10), [500, 100, 50, 30, 20, 100, 100, 50, 40, 10])
    train, val = train_val_split(_dataset(labels), 0.2, rng)
    expected = np.bincount(labels) * 0.2
    assert np.abs(val.class_counts() - expected).max() <= 1
    assert len(val) == round(0.2 * len(labels))


def test_same_seed_same_split_other_seed_other_split():
    data = _dataset(np.arange(500) % 10)
    a = train_val_split(data, 0.2, np.random.default_rng(7))[1]
    b = train_val_split(data, 0.2, np.random.default_rng(7))[1]
    c = train_val_split(data, 0.2, np.random.default_rng(8))[1]
    assert (_ids(a) == _ids(b)).all()
    assert not (_ids(a) == _ids(c)).all()


def test_not_stratified_and_unlabeled(rng):
    data = Dataset(np.zeros((50, 2, 2), np.uint8), None)
    train, val = train_val_split(data, 0.3, rng, stratified=False)
    assert (len(train), len(val)) == (35, 15) and val.labels is None
    with pytest.raises(DataError, match="no labels"):
        train_val_split(data, 0.3, rng)


def test_zero_fraction_gives_empty_validation(rng):
    train, val = train_val_split(_dataset(np.arange(20) % 10), 0.0, rng)
    assert len(train) == 20 and len(val) == 0


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_fraction(rng, fraction):
    with pytest.raises(ConfigError, match="validation fraction"):
        train_val_split(_dataset([0, 1]), fraction, rng)


def test_needs_a_generator():
    with pytest.raises(TypeError, match="Generator"):
        train_val_split(_dataset([0, 1]), 0.5, 42)


@given(labels=st.lists(st.integers(0, 9), min_size=1, max_size=300),
       fraction=st.floats(0, 0.99), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=80, deadline=None)
def test_stratified_split_properties(labels, fraction, seed):
    labels = np.array(labels)
    train, val = train_val_split(_dataset(labels), fraction, np.random.default_rng(seed))
    assert len(val) == int(np.floor(fraction * len(labels) + 0.5))
    assert len(train) + len(val) == len(labels)
    assert np.abs(val.class_counts() - np.bincount(labels, minlength=10) * fraction).max() < 1 + 1e-9


def test_real_mnist_validation_split(mnist_train):
    train, val = train_val_split(mnist_train, 5000 / 60000, np.random.default_rng(0))
    assert len(val) == 5000 and len(train) == 55000
    assert np.abs(val.class_counts() - mnist_train.class_counts() / 12).max() <= 1
