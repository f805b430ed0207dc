"""download_file against a local HTTP server: good, corrupt, truncated, refused, silent mirrors."""

from __future__ import annotations

import gzip
import hashlib
import logging

import numpy as np
import pytest

from digitnet.data.download import MIRRORS_ENV, download_file, resolve_mirrors
from digitnet.data.idx import idx_bytes, read_idx
from digitnet.errors import DataError, DownloadError
from tests.data.localserver import refused_url, serve, silent_server

FILE = "train-labels-idx1-ubyte.gz"


@pytest.fixture
def mirrors(tmp_path):
    """Three served folders holding ``FILE``: the right one, a wrong one and a truncated one."""
    contents = idx_bytes(np.arange(5000, dtype=np.int32) % 10)
    right = gzip.compress(contents)
    wrong = gzip.compress(idx_bytes(np.arange(5000, dtype=np.int32) % 7))
    folders = {}
    for name, data in {"good": right, "corrupt": wrong, "truncated": right[: len(right) // 2]}.items():
        folders[name] = tmp_path / "served" / name
        folders[name].mkdir(parents=True)
        (folders[name] / FILE).write_bytes(data)
    with serve(tmp_path / "served") as base:
        yield {name: f"{base}{name}/" for name in folders} | {
            "short": f"{base}short/",  # served from the folder root, see below
            "404": f"{base}status/404/",
            "sha256": hashlib.sha256(contents).hexdigest(),
            "root": tmp_path / "served",
            "right": right,
        }


def _no_temp_files(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


def test_good_mirror(tmp_path, mirrors):
    dest = tmp_path / "dest"
    path = download_file(FILE, mirrors["sha256"], dest, [mirrors["good"]], progress=False)
    assert path == dest / FILE
    assert path.read_bytes() == mirrors["right"]
    np.testing.assert_array_equal(read_idx(path), np.arange(5000) % 10)
    assert _no_temp_files(dest)


@pytest.mark.parametrize("bad", ["corrupt", "truncated", "404"])
def test_bad_mirror_then_good_one(tmp_path, mirrors, bad, caplog):
    dest = tmp_path / "dest"
    with caplog.at_level(logging.INFO, logger="digitnet.data.download"):
        path = download_file(FILE, mirrors["sha256"], dest, [mirrors[bad], mirrors["good"]], progress=False)
    assert path.read_bytes() == mirrors["right"]
    assert "trying the next mirror" in caplog.text
    assert _no_temp_files(dest)


def test_connection_cut_short_is_noticed(tmp_path, mirrors):
    (mirrors["root"] / FILE).write_bytes(mirrors["right"])  # what /short/<file> sends half of
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match="truncated transfer"):
        download_file(FILE, mirrors["sha256"], dest, [mirrors["short"]], progress=False)
    assert not (dest / FILE).exists() and _no_temp_files(dest)


def test_failures_are_echoed_only_with_a_progress_bar(tmp_path, mirrors, capsys):
    urls = [mirrors["corrupt"], mirrors["good"]]
    download_file(FILE, mirrors["sha256"], tmp_path / "a", urls, progress=False)
    assert capsys.readouterr().err == ""
    download_file(FILE, mirrors["sha256"], tmp_path / "b", urls, progress=True)
    assert "checksum mismatch" in capsys.readouterr().err


def test_all_mirrors_fail_lists_every_reason(tmp_path, mirrors):
    dest = tmp_path / "dest"
    urls = [mirrors["corrupt"], mirrors["truncated"], mirrors["404"], refused_url()]
    with pytest.raises(DownloadError) as info:
        download_file(FILE, mirrors["sha256"], dest, urls, progress=False)
    message = str(info.value)
    assert message.startswith(f"could not download {FILE} from any mirror: ")
    assert "checksum mismatch" in message
    assert "truncated gzip" in message
    assert "HTTP 404" in message
    assert "refused" in message
    assert "DIGITNET_MIRRORS" in message and f"place the file (or its uncompressed form) in {dest}" in message
    assert "\n" not in message  # one line for the CLI
    assert not (dest / FILE).exists() and _no_temp_files(dest)


def test_no_network(tmp_path):
    with pytest.raises(DownloadError, match="connection refused"):
        download_file(FILE, "0" * 64, tmp_path, [refused_url()], progress=False)


def test_silent_server_times_out(tmp_path):
    with silent_server() as url, pytest.raises(DownloadError, match="timed out"):
        download_file(FILE, "0" * 64, tmp_path, [url], timeout=0.3, progress=False)


def test_file_urls_work(tmp_path, mirrors):
    url = (mirrors["root"] / "good").as_uri() + "/"
    path = download_file(FILE, mirrors["sha256"], tmp_path / "dest", [url], progress=False)
    assert path.read_bytes() == mirrors["right"]


def test_progress_bar_goes_to_stderr(tmp_path, mirrors, capsys):
    download_file(FILE, mirrors["sha256"], tmp_path / "dest", [mirrors["good"]], progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert FILE in captured.err


def test_unwritable_target_is_a_data_error(tmp_path, mirrors):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="cannot create the download folder"):
        download_file(FILE, mirrors["sha256"], tmp_path / "file" / "sub", [mirrors["good"]], progress=False)


def test_resolve_mirrors(monkeypatch):
    defaults = ["https://a.example/mnist/", "https://b.example/"]
    monkeypatch.delenv(MIRRORS_ENV, raising=False)
    assert resolve_mirrors(defaults, "mnist") == defaults
    monkeypatch.setenv(MIRRORS_ENV, "http://x/{name}/, http://y/")
    assert resolve_mirrors(defaults, "fashion-mnist") == ["http://x/fashion-mnist/", "http://y/"]
    assert resolve_mirrors(defaults, "mnist", override=["http://z/"]) == ["http://z/"]
    assert resolve_mirrors(defaults, "mnist", override="http://p/ http://q/") == ["http://p/", "http://q/"]
    with pytest.raises(DownloadError, match="no download mirrors"):
        resolve_mirrors(defaults, "mnist", override=[])
