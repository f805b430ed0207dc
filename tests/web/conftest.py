"""Fixtures of the web tests: the small trained test model and a live server on a free port."""

from __future__ import annotations

import pytest

from tests.conftest import require_module
from tests.web.support import serve, trained_model_file


@pytest.fixture(scope="session")
def model_file(mnist_path, tmp_path_factory):
    """Path of the small MLP trained on real MNIST (see tests/web/support.py)."""
    return trained_model_file(str(tmp_path_factory.mktemp("handwriting-model")))


@pytest.fixture(scope="session")
def loaded_model(model_file):
    from digitnet.io import load_model

    return load_model(model_file)


@pytest.fixture(scope="session")
def live_server(loaded_model):
    """The real app served by uvicorn in a thread on 127.0.0.1 and a free port; yields its base URL."""
    require_module("uvicorn")
    from digitnet.web.server import create_app

    with serve(create_app(loaded_model)) as url:
        yield url


#: small networks of each kind the Inside tab must explain, trained for seconds with the presets' settings
INSIDE_KINDS = ("mlp", "sigmoid_mse", "cnn")


def _inside_config(kind: str):
    from digitnet.config import load_preset

    if kind == "mlp":           # mlp-fast's settings, a narrower layer and fewer images
        return load_preset("mlp-fast").replace(arch="784-48-10", epochs=1, limit_train=3000)
    if kind == "sigmoid_mse":   # seed-004's: sigmoid hidden and output, MSE summed over the batch, Xavier, SGD
        return load_preset("seed-004").replace(arch="784-32-10", epochs=2, limit_train=3000)
    # cnn-fast's layers (conv-maxpool-ReLU twice, dense-ReLU-dense) with fewer channels
    layers = [{"type": "Conv2D", "in_channels": 1, "out_channels": 6, "kernel_size": 5, "padding": 2},
              {"type": "MaxPool2D", "kernel_size": 2}, {"type": "ReLU"},
              {"type": "Conv2D", "in_channels": 6, "out_channels": 8, "kernel_size": 5, "padding": 2},
              {"type": "MaxPool2D", "kernel_size": 2}, {"type": "ReLU"}, {"type": "Flatten"},
              {"type": "Dense", "in_features": 392, "out_features": 24}, {"type": "ReLU"},
              {"type": "Dense", "in_features": 24, "out_features": 10}]
    return load_preset("cnn-fast").replace(layers=layers, arch="small-cnn", epochs=1, limit_train=3000)


@pytest.fixture(scope="session")
def inside_runs(mnist_path, tmp_path_factory):
    """``{kind: run directory}`` for each of :data:`INSIDE_KINDS` (trained once per session, seconds each)."""
    from digitnet.runs import run_training
    from tests.web.support import _one_blas_thread

    folder = tmp_path_factory.mktemp("inside-runs")
    runs = {}
    with _one_blas_thread():
        for kind in INSIDE_KINDS:
            run_training(_inside_config(kind), folder / kind, progress=False, quiet=True, log=lambda message: None)
            runs[kind] = folder / kind
    return runs
