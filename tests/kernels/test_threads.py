"""The BLAS thread rule (digitnet.kernels.threads): one thread for small networks only."""

import os

import pytest

from digitnet.kernels import speed_up
from digitnet.kernels.threads import (
    DENSE_BLAS_FLOPS,
    SMALL_MATMUL_FLOPS,
    blas_runs_products,
    blas_threads_for,
    largest_matmul_flops,
)
from digitnet.nn import Dense, Flatten
from digitnet.nn.conv import Conv2D
from digitnet.nn.pooling import MaxPool2D
from digitnet.nn.sequential import Sequential


def test_largest_matmul_of_a_step():
    small = Sequential.from_spec("784-128-64-10")
    assert largest_matmul_flops(small, 128) == 2 * 128 * 784 * 128          # x @ W of the first layer
    cnn = Sequential([Conv2D(1, 8, 3, padding=1), MaxPool2D(2), Flatten(), Dense(8 * 14 * 14, 10)],
                     input_shape=(1, 28, 28))
    assert largest_matmul_flops(cnn, 4) == max(2 * 4 * 8 * 9 * 28 * 28, 2 * 4 * 8 * 14 * 14 * 10)
    assert largest_matmul_flops(Sequential.from_spec("784-800-10"), 128) >= SMALL_MATMUL_FLOPS


def test_small_networks_train_with_one_blas_thread_large_ones_with_the_default():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if "OPENBLAS_NUM_THREADS" in os.environ or "OMP_NUM_THREADS" in os.environ:
        pytest.skip("an explicit BLAS thread count in the environment wins")
    with blas_threads_for(Sequential.from_spec("784-128-64-10"), 128):
        assert all(info["num_threads"] == 1 for info in threadpoolctl.threadpool_info()
                   if info["user_api"] == "blas")
    before = [info["num_threads"] for info in threadpoolctl.threadpool_info()]
    with blas_threads_for(Sequential.from_spec("784-800-10"), 128):
        assert [info["num_threads"] for info in threadpoolctl.threadpool_info()] == before


def test_with_the_kernels_blas_runs_the_products_of_dense_networks_from_seed_002_up():
    # seed-002's first layer, 2 * 128 * 784 * 128 = 25.7 MFLOP, is just above the line; 784-32-10 is below
    assert 2 * 128 * 784 * 128 >= DENSE_BLAS_FLOPS > 2 * 128 * 784 * 32
    for spec, batch, expected in [("784-128-64-10", 128, True), ("784-800-10", 128, True), ("784-32-10", 128, False),
                                  ("784-128-64-10", 32, False)]:
        model = speed_up(Sequential.from_spec(spec))[0]
        assert blas_runs_products(model, batch) is expected, (spec, batch)
    cnn = speed_up(Sequential([Conv2D(1, 8, 3, padding=1), MaxPool2D(2), Flatten(), Dense(8 * 14 * 14, 800)],
                              input_shape=(1, 28, 28)))[0]
    assert not blas_runs_products(cnn, 128)          # convolutions: the workers run everything
