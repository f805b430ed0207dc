"""iterate_batches / to_float, and the Dataset checks the loaders rely on."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.data import Dataset
from digitnet.data.batches import iterate_batches, to_float
from digitnet.errors import DataError


@pytest.fixture
def store(rng):
    images = rng.integers(0, 256, size=(23, 4, 5), dtype=np.uint8)
    images[:, 0, 0] = np.arange(23)  # sample id in the first pixel
    return images, (np.arange(23) % 10).astype(np.uint8)


def test_to_float_range_and_exactness():
    x = to_float(np.arange(256, dtype=np.uint8))
    assert x.dtype == np.float32 and x.min() == 0 and x.max() == 1
    np.testing.assert_allclose(x, np.arange(256) / 255, rtol=1e-6)


@pytest.mark.parametrize(("layout", "shape"), [("flat", (10, 20)), ("nchw", (10, 1, 4, 5))])
def test_layouts(store, layout, shape):
    images, labels = store
    x, y = next(iterate_batches(images, labels, 10, shuffle=False, layout=layout))
    assert x.shape == shape and x.dtype == np.float32
    np.testing.assert_allclose(x.reshape(10, 4, 5), images[:10] / 255, rtol=1e-6)
    assert (y == labels[:10]).all()


def test_one_epoch_covers_every_sample_once(store):
    images, labels = store
    seen = []
    for x, y in iterate_batches(images, labels, 5, np.random.default_rng(1)):
        ids = np.rint(x[:, 0] * 255).astype(int)
        assert (labels[ids] == y).all()  # images and labels stay paired
        seen += ids.tolist()
    assert sorted(seen) == list(range(23)) and seen != list(range(23))


def test_shuffle_is_reproducible(store):
    images, labels = store

    def order(seed):
        return [y.tolist() for _, y in iterate_batches(images, labels, 4, np.random.default_rng(seed))]

    assert order(3) == order(3)
    assert order(3) != order(4)


def test_batch_sizes_and_drop_last(store):
    images, labels = store
    assert [len(y) for _, y in iterate_batches(images, labels, 10, shuffle=False)] == [10, 10, 3]
    assert [len(y) for _, y in iterate_batches(images, labels, 10, shuffle=False, drop_last=True)] == [10, 10]
    assert [y for _, y in iterate_batches(images, None, 10, shuffle=False)] == [None] * 3


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": -3}, "batch_size"),
    ({"batch_size": 4, "layout": "nhwc"}, "layout"),
    ({"batch_size": 4, "shuffle": True}, "Generator"),
])
def test_bad_arguments(store, kwargs, message):
    images, labels = store
    kwargs.setdefault("shuffle", False)
    with pytest.raises(ValueError, match=message):
        next(iterate_batches(images, labels, **kwargs))


def test_dataset_label_checks():
    images = np.zeros((3, 2, 2), np.uint8)
    assert Dataset(images, np.array([0.0, 1.0, 9.0])).labels.dtype == np.uint8
    with pytest.raises(DataError, match="whole numbers"):
        Dataset(images, np.array([0.0, 3.7, 1.0]))  # was silently truncated to 3
    with pytest.raises(DataError, match="whole numbers"):
        Dataset(images, np.array([0.0, np.nan, 1.0]))
    with pytest.raises(DataError, match="outside 0-9"):
        Dataset(images, np.array([0, 1, 10]))
    with pytest.raises(DataError, match="out of range"):
        Dataset(images, np.array([0, -1, 1]))
    with pytest.raises(DataError, match="integers"):
        Dataset(images, np.array(["a", "b", "c"]))
