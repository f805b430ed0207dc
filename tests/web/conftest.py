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
