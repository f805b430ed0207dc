"""The dataset registry: real MNIST counts, lookup order, checksums, cache repair, downloads."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from digitnet.data.datasets import (
    FASHION_CLASSES,
    MNIST,
    cache_root,
    dataset_info,
    download_dataset,
    get_spec,
    load_dataset,
)
from digitnet.data.idx import write_idx
from digitnet.errors import ConfigError, DataError, DownloadError
from tests.conftest import skip_or_fail
from tests.data.localserver import serve

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def _real(mnist_path: Path, stem: str) -> Path:
    return next(p for p in (mnist_path / stem, mnist_path / f"{stem}.gz") if p.exists())


def _link_test_split(mnist_path: Path, folder: Path) -> Path:
    """Symlink the real MNIST test files into ``folder`` (no copies of the data)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        real = _real(mnist_path, stem)
        (folder / real.name).symlink_to(real)
    return folder


def _fake_test_split(folder: Path) -> Path:
    """Valid IDX files of the right shapes whose checksums are wrong."""
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((10000, 28, 28), np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(10000, dtype=np.uint8) % 10)
    return folder


@pytest.fixture
def no_env_data(monkeypatch):
    monkeypatch.delenv("DIGITNET_DATA", raising=False)


# ------------------------------------------------------------------------------ real data


def test_mnist_train(mnist_train):
    assert mnist_train.images.shape == (60000, 28, 28) and mnist_train.images.dtype == np.uint8
    assert mnist_train.labels.shape == (60000,) and mnist_train.labels.dtype == np.uint8
    assert mnist_train.class_counts().tolist() == TRAIN_COUNTS
    assert mnist_train.name == "mnist/train" and mnist_train.classes == [str(d) for d in range(10)]


def test_mnist_test(mnist_test):
    assert mnist_test.images.shape == (10000, 28, 28)
    assert mnist_test.class_counts().tolist() == TEST_COUNTS


@pytest.fixture
def fashion_dir(no_env_data) -> Path:
    if not FASHION_DIR.is_dir():
        skip_or_fail("Fashion-MNIST is not installed in /usr/share/datasets/fashion-mnist "
                     "(apt-get install dataset-fashion-mnist)")
    return FASHION_DIR


def test_fashion_mnist_from_the_debian_package(fashion_dir):
    test = load_dataset("fashion-mnist", "test", download=False)
    assert test.classes == FASHION_CLASSES
    assert test.class_counts().tolist() == [1000] * 10
    assert str(fashion_dir) in test.source
    train = load_dataset("fashion", "train", download=False)  # alias
    assert train.class_counts().tolist() == [6000] * 10


# ------------------------------------------------------------------------------ lookup order


@pytest.mark.parametrize("layout", ["mnist", ".", "MNIST/raw"])
def test_data_dir_layouts(tmp_path, mnist_path, no_env_data, layout):
    folder = _link_test_split(mnist_path, tmp_path / "data" / layout)
    data = load_dataset("mnist", "test", data_dir=tmp_path / "data", download=False)
    assert str(folder.resolve()) in str(Path(data.source.split(", ")[0]).parent.resolve())
    assert len(data) == 10000


def test_data_dir_comes_before_digitnet_data(tmp_path, mnist_path, monkeypatch):
    monkeypatch.setenv("DIGITNET_DATA", str(mnist_path.parent))
    _link_test_split(mnist_path, tmp_path / "mine" / "mnist")
    assert str(tmp_path / "mine") in load_dataset("mnist", "test", data_dir=tmp_path / "mine").source


def test_empty_data_dir_falls_back_to_digitnet_data(tmp_path, mnist_path, monkeypatch):
    monkeypatch.setenv("DIGITNET_DATA", str(mnist_path.parent))
    data = load_dataset("mnist", "test", data_dir=tmp_path, download=False)
    assert str(mnist_path) in data.source


def test_digitnet_data_comes_before_the_cache(mnist_path, monkeypatch):
    monkeypatch.setenv("DIGITNET_DATA", str(mnist_path.parent))
    _fake_test_split(cache_root() / "mnist")
    assert str(mnist_path) in load_dataset("mnist", "test", download=False).source


def test_cache_is_used(mnist_path, no_env_data):
    folder = _link_test_split(mnist_path, cache_root() / "mnist")
    assert str(folder) in load_dataset("mnist", "test", download=False).source


def test_raw_files_and_dotted_names(tmp_path, mnist_path, no_env_data):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for stem, name in [("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
                       ("t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte")]:
        real = _real(mnist_path, stem)
        data = gzip.decompress(real.read_bytes()) if real.suffix == ".gz" else real.read_bytes()
        (folder / name).write_bytes(data)
    data = load_dataset("mnist", "test", data_dir=tmp_path, download=False)
    assert data.source == f"{folder / 't10k-images.idx3-ubyte'}, {folder / 't10k-labels-idx1-ubyte'}"
    assert data.class_counts().tolist() == TEST_COUNTS


def test_not_found_without_download(tmp_path, no_env_data):
    with pytest.raises(DataError, match=r"MNIST test files .* not found in: .*digitnet data download"):
        load_dataset("mnist", "test", download=False)


def test_bad_data_dir(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist", "test", data_dir=tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is not a directory"):
        load_dataset("mnist", "test", data_dir=tmp_path / "file")


def test_unknown_names():
    with pytest.raises(ConfigError, match="unknown dataset 'cifar10'"):
        load_dataset("cifar10")
    with pytest.raises(ConfigError, match="unknown split 'validation'"):
        load_dataset("mnist", "validation")
    assert get_spec("Fashion_MNIST").name == "fashion-mnist"


# ------------------------------------------------------------------------------ checksums


def test_checksum_mismatch(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITNET_DATA", str(tmp_path))
    folder = _fake_test_split(tmp_path / "mnist")
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: checksum mismatch.*0fa7898d"):
        load_dataset("mnist", "test")
    assert (folder / "t10k-images-idx3-ubyte.gz").exists()  # the user's file is never deleted
    data = load_dataset("mnist", "test", verify=False)
    assert data.images.max() == 0


def test_mismatch_names_the_file_it_really_is(tmp_path, fashion_dir):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / name).symlink_to(fashion_dir / name)
    with pytest.raises(DataError, match=r"checksum mismatch.*\(it is the Fashion-MNIST file\)"):
        load_dataset("mnist", "test", data_dir=tmp_path, download=False)


def test_dataset_info_real(mnist_path, monkeypatch):
    monkeypatch.setenv("DIGITNET_DATA", str(mnist_path.parent))
    info = dataset_info("mnist")
    assert info["ok"] is True
    assert info["splits"]["train"]["count"] == 60000 and info["splits"]["test"]["count"] == 10000
    assert list(info["splits"]["train"]["class_counts"].values()) == TRAIN_COUNTS
    assert list(info["splits"]["test"]["class_counts"].values()) == TEST_COUNTS
    assert {f["checksum"] for s in info["splits"].values() for f in s["files"]} == {"OK"}
    assert info["splits"]["test"]["origin"] == "DIGITNET_DATA"


def test_dataset_info_reports_failures(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITNET_DATA", str(tmp_path))
    _fake_test_split(tmp_path / "mnist")
    info = dataset_info("mnist")
    assert info["ok"] is False
    assert info["splits"]["train"]["found"] is False
    assert [f["checksum"] for f in info["splits"]["train"]["files"]] == ["missing", "missing"]
    test = info["splits"]["test"]
    assert test["found"] is True and test["count"] == 10000
    assert [f["checksum"] for f in test["files"]] == ["FAILED", "FAILED"]
    assert "checksum mismatch" in test["error"]


# ------------------------------------------------------------------------------ downloads


@pytest.fixture
def mnist_mirror(mnist_path, monkeypatch):
    """A local server serving the real MNIST .gz files; DIGITNET_MIRRORS points at it."""
    if not all((mnist_path / f"{f.stem}.gz").exists() for pair in MNIST.files.values() for f in pair):
        pytest.skip("the local MNIST folder has no .gz files to serve")
    with serve(mnist_path) as url:
        monkeypatch.setenv("DIGITNET_MIRRORS", url)
        yield url


def test_download_on_first_use_then_cached(no_env_data, mnist_mirror, monkeypatch):
    data = load_dataset("mnist", "test")
    assert data.class_counts().tolist() == TEST_COUNTS
    folder = cache_root() / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    monkeypatch.setenv("DIGITNET_MIRRORS", "http://127.0.0.1:9/")  # no network needed any more
    assert str(folder) in load_dataset("mnist", "test").source


def test_corrupt_cache_file_is_downloaded_again(no_env_data, mnist_mirror):
    folder = _fake_test_split(cache_root() / "mnist")
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("mnist", "test", download=False)
    data = load_dataset("mnist", "test")
    assert data.class_counts().tolist() == TEST_COUNTS
    assert str(folder) in data.source


def test_download_into_data_dir_and_force(tmp_path, no_env_data, mnist_mirror):
    folder = download_dataset("mnist", data_dir=tmp_path, splits=["test"], progress=False)
    assert folder == tmp_path / "mnist"
    assert load_dataset("mnist", "test", data_dir=tmp_path, download=False).class_counts().tolist() == TEST_COUNTS
    shutil.rmtree(folder)
    _fake_test_split(folder)
    with pytest.raises(DataError, match="use --force to replace it"):
        download_dataset("mnist", data_dir=tmp_path, splits=["test"], progress=False)
    download_dataset("mnist", data_dir=tmp_path, splits=["test"], progress=False, force=True)
    assert load_dataset("mnist", "test", data_dir=tmp_path, download=False).class_counts().tolist() == TEST_COUNTS


def test_download_failure_explains_what_to_do(no_env_data):
    with pytest.raises(DownloadError) as info:
        load_dataset("mnist", "test")
    message = str(info.value)
    assert message.startswith("could not download t10k-images-idx3-ubyte.gz from any mirror: ")
    assert "connection refused" in message
    assert "set DIGITNET_DATA to a folder holding mnist/" in message
    assert str(cache_root() / "mnist") in message
