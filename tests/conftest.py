"""Shared fixtures and the strict-skip rule.

Optional heavy checks (PyTorch cross-checks, headless browser tests, Fashion-MNIST) skip with a
reason on a machine that lacks their tools. CI sets ``DIGITNET_STRICT=1`` and installs every
tool, and there a skip of this kind is turned into a failure: CI never silently skips.
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

STRICT = os.environ.get("DIGITNET_STRICT") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip the test with ``reason``, or fail it under DIGITNET_STRICT=1."""
    if STRICT:
        pytest.fail(f"DIGITNET_STRICT=1 but {reason}")
    pytest.skip(reason)


def require_module(name: str):
    """Import and return module ``name``, or skip (fail when strict) if it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        skip_or_fail(f"optional module {name!r} is not installed")


def require_chromium() -> str:
    """Path of the Chromium binary for browser tests, or skip/fail."""
    path = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
    if not path:
        skip_or_fail("chromium is not installed (apt-get install chromium)")
    require_module("playwright.sync_api")
    return path


def mnist_dir() -> Path | None:
    """``$DIGITNET_DATA/mnist`` if it holds the four MNIST files, else None."""
    root = os.environ.get("DIGITNET_DATA")
    if not root:
        return None
    folder = Path(root) / "mnist"
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]
    if all((folder / n).exists() or (folder / f"{n}.gz").exists() for n in names):
        return folder
    return None


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    """Folder of the real MNIST files; tests on real data skip without it (fail when strict)."""
    folder = mnist_dir()
    if folder is None:
        skip_or_fail("real MNIST not found: set DIGITNET_DATA to a folder holding mnist/")
    return folder


@pytest.fixture(scope="session")
def mnist_train(mnist_path):
    """The real MNIST training split (60,000 images), loaded once per session."""
    from digitnet.data.datasets import load_dataset

    return load_dataset("mnist", split="train")


@pytest.fixture(scope="session")
def mnist_test(mnist_path):
    """The real MNIST test split (10,000 images), loaded once per session."""
    from digitnet.data.datasets import load_dataset

    return load_dataset("mnist", split="test")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's real cache from tests."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
