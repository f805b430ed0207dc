"""Fuzzing the .npz reader (digitnet.data.formats): damaged zips and .npy headers that lie."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from digitnet.data.formats import load_file
from tests.fuzz.support import fuzz_settings, mutated

pytestmark = pytest.mark.timeout(60)


def _npz(compressed: bool = False, **arrays) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def _seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 28, 28), dtype=np.uint8)
    labels = np.array([3, 7], dtype=np.uint8)
    return [_npz(x_train=images, y_train=labels),
            _npz(True, x_train=images, y_train=labels, x_test=images[:1], y_test=labels[:1]),
            _npz(images=images.reshape(2, 784).astype(np.float64), labels=labels.astype(np.int64))]


SEEDS = _seeds()


def _corrupt_deflate(npz: bytes) -> bytes:
    """The first member's deflate stream overwritten with 0xFF: zlib fails ("invalid block type")."""
    data = bytearray(npz)
    start = 30 + int.from_bytes(data[26:28], "little") + int.from_bytes(data[28:30], "little")
    data[start:start + 8] = b"\xff" * 8
    return bytes(data)


def _npy(shape_text: str, descr: str, body: bytes) -> bytes:
    """A version 1.0 .npy file whose header says ``shape_text`` and ``descr`` over ``body``."""
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}".encode("latin-1")
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + body


@st.composite
def lying_npy(draw) -> bytes:
    """A valid zip holding .npy members whose headers claim any shape and dtype."""
    dims = st.sampled_from([0, 1, 2, 28, 784, 10**6, 2**31, 2**40, -1])
    shape = draw(st.lists(dims, max_size=4))
    shape_text = "(" + "".join(f"{d}, " for d in shape) + ")"
    descr = draw(st.sampled_from(["|u1", "<f8", "<i8", "|O", "<U10", "|V8", "<c16", ">f4", "bogus"]))
    body = draw(st.binary(max_size=64))
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        archive.writestr("x_train.npy", _npy(shape_text, descr, body))
        if draw(st.booleans()):
            archive.writestr("y_train.npy", _npy("(2,)", "|u1", b"\x03\x07"))
    return buffer.getvalue()


def check(dataset) -> None:
    """A Dataset may hold images of any size [N, H, W] (a model refuses sizes it cannot read)."""
    if dataset is not None:
        assert dataset.images.dtype == np.uint8 and dataset.images.ndim == 3


def load(tmp_path, data: bytes):
    path = tmp_path / "mnist.npz"
    path.write_bytes(data)
    return lambda: load_file(path)


@fuzz_settings(400)
@given(data=mutated(SEEDS))
@example(data=_corrupt_deflate(SEEDS[1]))  # found by an earlier fuzzing run: zlib.error escaped
def test_mutated_npz_files(memory, tmp_path, data):
    check(memory.run(load(tmp_path, data), len(data)))


@fuzz_settings(300)
@given(data=lying_npy())
def test_npy_headers_that_lie(memory, tmp_path, data):
    check(memory.run(load(tmp_path, data), len(data)))


def test_seeds_are_valid(tmp_path):
    for data in SEEDS:
        assert len(load(tmp_path, data)().images) == 2
