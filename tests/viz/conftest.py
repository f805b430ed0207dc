"""Fixtures for the picture tests: a small real run, a small CNN and a test subset (session scope)."""

from __future__ import annotations

import pytest

from tests.viz.support import tiny_cnn, tiny_run


@pytest.fixture(scope="session")
def run_dir(mnist_path, tmp_path_factory):
    """A real run directory (model, initial weights, history, config) of a small MLP."""
    return tiny_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def test_subset(mnist_test):
    """The first 1,000 real MNIST test images."""
    return mnist_test.head(1000)


@pytest.fixture(scope="session")
def source(run_dir, test_subset):
    """A PlotSource of the small run on the test subset (its caches are shared by the tests)."""
    from digitnet.viz import PlotSource

    return PlotSource.open(run_dir, test=test_subset)


@pytest.fixture(scope="session")
def cnn_source(mnist_train, test_subset, tmp_path_factory):
    """A PlotSource of a small trained CNN saved as a bare model file."""
    from digitnet.viz import PlotSource

    return PlotSource.open(tiny_cnn(tmp_path_factory.getbasetemp(), mnist_train), test=test_subset)
