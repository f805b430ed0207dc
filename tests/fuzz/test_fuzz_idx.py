"""Fuzzing the IDX reader (digitnet.data.idx): random, mutated and lying headers, raw and gzip."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from digitnet.data.idx import IDX_DTYPES, idx_bytes, parse_idx, read_idx
from tests.fuzz.support import fuzz_settings, mutated

pytestmark = pytest.mark.timeout(60)


def _seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), rng.integers(0, 10, 5, dtype=np.uint8),
              rng.normal(size=(2, 3)).astype(np.float32), np.arange(-4, 4, dtype=np.int16).reshape(2, 2, 2),
              np.array([1.5, -2.0]), np.arange(6, dtype=np.int32)]
    raw = [idx_bytes(a) for a in arrays]
    return raw + [gzip.compress(r, mtime=0) for r in raw[:3]]


SEEDS = _seeds()


def check_result(array: np.ndarray | None, data: bytes) -> None:
    """A successful parse returns an array no larger than the input explains."""
    if array is None:
        return
    assert isinstance(array, np.ndarray) and array.ndim >= 1
    assert array.dtype.isnative
    limit = len(data) * (1032 if data[:2] == b"\x1f\x8b" else 1)
    assert array.nbytes <= limit


@fuzz_settings(400)
@given(data=st.binary(max_size=300))
def test_random_bytes(memory, data):
    check_result(memory.run(lambda: parse_idx(data), len(data)), data)


@fuzz_settings(700)
@given(data=mutated(SEEDS))
def test_mutated_valid_files(memory, data):
    check_result(memory.run(lambda: parse_idx(data), len(data)), data)


@st.composite
def lying_headers(draw) -> bytes:
    """A well-formed header (maybe with a wrong type code) over a body of any length."""
    code = draw(st.sampled_from([*IDX_DTYPES, 0x00, 0x0A, 0xFF]))
    ndim = draw(st.integers(0, 40))
    dims = draw(st.lists(st.sampled_from([0, 1, 2, 3, 28, 60000, 2**16, 2**31, 2**32 - 1]),
                         min_size=min(ndim, 6), max_size=min(ndim, 6)))
    header = bytes([0, 0, code, ndim]) + b"".join(struct.pack(">I", d) for d in dims)
    body = draw(st.binary(max_size=64))
    data = header + body
    return gzip.compress(data, mtime=0) if draw(st.booleans()) else data


@fuzz_settings(400)
@given(data=lying_headers())
def test_headers_that_claim_any_size(memory, data):
    check_result(memory.run(lambda: parse_idx(data), len(data)), data)


@fuzz_settings(150)
@given(data=mutated(SEEDS, max_ops=2))
def test_read_idx_from_files(memory, tmp_path, data):
    path = tmp_path / "fuzz-idx3-ubyte"
    path.write_bytes(data)
    check_result(memory.run(lambda: read_idx(path), len(data)), data)


@fuzz_settings(150)
@given(array=st.sampled_from(list(IDX_DTYPES.values())).flatmap(
    lambda dtype: st.lists(st.integers(0, 4), min_size=1, max_size=4).map(
        lambda shape: np.arange(int(np.prod(shape)), dtype=dtype.newbyteorder("=")).reshape(shape))))
def test_valid_files_round_trip(array):
    assert np.array_equal(parse_idx(idx_bytes(array)), array)
    assert np.array_equal(parse_idx(gzip.compress(idx_bytes(array), mtime=0)), array)
