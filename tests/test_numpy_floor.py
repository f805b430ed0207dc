"""benchmarks/numpy_floor.py: its lean loop must train the same network as digitnet, or the floor it
measures says nothing about digitnet."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from digitnet.nn.losses import SoftmaxCrossEntropy
from digitnet.nn.optim import SGD
from digitnet.nn.sequential import Sequential


def load_floor_module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "numpy_floor.py"
    spec = importlib.util.spec_from_file_location("numpy_floor", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lean_loop_steps_like_digitnet(rng):
    images = rng.integers(0, 256, size=(384, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=384).astype(np.uint8)
    lean = load_floor_module().LeanLoop(images, labels, np.random.default_rng(1))
    model = Sequential.from_spec("784-128-64-10", "relu", rng=np.random.default_rng(2))
    for layer, weights, bias in zip(model.layers[::2], lean.weights, lean.biases, strict=True):
        layer.params["weights"][...] = weights
        layer.params["bias"][...] = bias
    loss, optimizer = SoftmaxCrossEntropy(), SGD(0.1)
    initial = [w.copy() for w in lean.weights]
    for step in range(3):
        x = lean.x_all[step * 128:(step + 1) * 128]
        y = labels[step * 128:(step + 1) * 128]
        lean.step(x, y.astype(np.intp))
        loss.forward(model.forward(x, training=True), y)
        model.backward(loss.backward())
        optimizer.step(model.parameters())
    for layer, weights, bias in zip(model.layers[::2], lean.weights, lean.biases, strict=True):
        np.testing.assert_allclose(layer.params["weights"], weights, rtol=0, atol=1e-5)
        np.testing.assert_allclose(layer.params["bias"], bias, rtol=0, atol=1e-5)
    for before, after in zip(initial, lean.weights, strict=True):
        assert np.abs(after - before).max() > 1e-4                                    # both did learn
