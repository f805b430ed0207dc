"""to_float / images_to_inputs, and the Dataset checks the loaders rely on."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.data import Dataset
from digitnet.data.batches import images_to_inputs, to_float
from digitnet.errors import DataError


def test_to_float_range_and_exactness():
    x = to_float(np.arange(256, dtype=np.uint8))
    assert x.dtype == np.float32 and x.min() == 0 and x.max() == 1
    np.testing.assert_allclose(x, np.arange(256) / 255, rtol=1e-6)


@pytest.mark.parametrize("input_shape", [(784,), (1, 28, 28)])
def test_images_to_inputs_in_a_model_layout(rng, input_shape):
    images = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    x = images_to_inputs(images, input_shape)
    assert x.shape == (3, *input_shape) and x.dtype == np.float32
    np.testing.assert_allclose(x.reshape(3, 28, 28), images / 255, rtol=1e-6)
    with pytest.raises(DataError, match="do not fit"):
        images_to_inputs(images[:, :27], input_shape)


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
