"""``digitnet data info`` / ``digitnet data download`` run as a user would, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail
from tests.data.localserver import refused_url, serve


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ)  # XDG_CACHE_HOME is already a fresh folder (tests/conftest.py)
    environment["DIGITNET_MIRRORS"] = refused_url()  # never the real network
    environment.update(env)
    return subprocess.run([sys.executable, "-m", "digitnet", "data", *args], capture_output=True, text=True,
                          env=environment, timeout=120)


@pytest.fixture
def data_root(mnist_path) -> str:
    return str(mnist_path.parent)


def test_info_real_mnist(data_root):
    result = run("info", DIGITNET_DATA=data_root)
    assert result.returncode == 0, result.stderr
    assert "train: 60,000 images" in result.stdout and "test: 10,000 images" in result.stdout
    assert "checksums: all OK" in result.stdout
    assert result.stdout.count("OK ") == 4


def test_info_json(data_root):
    result = run("info", "--json", DIGITNET_DATA=data_root)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["ok"] is True
    assert info["splits"]["train"]["count"] == 60000 and info["splits"]["test"]["count"] == 10000
    assert info["splits"]["train"]["class_counts"]["1"] == 6742
    assert all(f["checksum"] == "OK" for split in info["splits"].values() for f in split["files"])


def test_info_bad_data_dir_is_one_line_and_exit_2(tmp_path):
    result = run("info", "--data-dir", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"digitnet data: error: data directory {tmp_path / 'nope'} does not exist\n"


def test_info_missing_data_exits_1(tmp_path):
    result = run("info", DIGITNET_DATA=str(tmp_path))
    assert result.returncode == 1
    assert "train: NOT FOUND" in result.stdout and "digitnet data download" in result.stdout


def test_info_failed_checksum_exits_1(tmp_path):
    import numpy as np

    from digitnet.data.idx import write_idx

    folder = tmp_path / "mnist"
    folder.mkdir()
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((10000, 28, 28), np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(10000, np.uint8))
    result = run("info", DIGITNET_DATA=str(tmp_path))
    assert result.returncode == 1
    assert "FAILED" in result.stdout and "checksum mismatch" in result.stdout


def test_info_fashion_mnist():
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        skip_or_fail("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    result = run("info", "--dataset", "fashion-mnist", "--json", DIGITNET_DATA="")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["splits"]["test"]["class_counts"]["Ankle boot"] == 1000
    assert info["splits"]["train"]["origin"] == "system"


def test_download_from_a_local_mirror(tmp_path, mnist_path):
    if not (mnist_path / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("the local MNIST folder has no .gz files to serve")
    with serve(mnist_path) as url:
        result = run("download", "--data-dir", str(tmp_path), "--no-progress", DIGITNET_MIRRORS=url,
                     DIGITNET_DATA="")
    assert result.returncode == 0, result.stderr
    assert f"all files present and verified in {tmp_path / 'mnist'}" in result.stdout
    assert len(list((tmp_path / "mnist").glob("*-ubyte.gz"))) == 4
    again = run("info", "--data-dir", str(tmp_path), DIGITNET_DATA="")
    assert again.returncode == 0 and "checksums: all OK" in again.stdout


def test_download_without_network_is_one_line_and_exit_2(tmp_path):
    result = run("download", "--data-dir", str(tmp_path), DIGITNET_DATA="")
    assert result.returncode == 2
    assert result.stderr.startswith("digitnet data: error: could not download train-images-idx3-ubyte.gz "
                                    "from any mirror: ")
    assert result.stderr.count("\n") == 1  # one line, no traceback, no per-mirror chatter
    assert "connection refused" in result.stderr


def test_download_when_already_available(data_root):
    result = run("download", DIGITNET_DATA=data_root)
    assert result.returncode == 0
    assert "already available" in result.stdout
