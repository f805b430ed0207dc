"""Fixtures of the web tests: the small trained test model and a live server on a free port."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.conftest import require_module
from tests.web.support import trained_model_file


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
    uvicorn = require_module("uvicorn")
    from digitnet.web.server import create_app

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(loaded_model), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the uvicorn test server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    listener.close()
