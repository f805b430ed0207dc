"""IDX reader/writer: round trips for every type code, gzip by content, and every kind of bad file."""

from __future__ import annotations

import gzip
import hashlib
import re
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from digitnet.data.idx import (
    IDX_DTYPES,
    content_sha256,
    idx_bytes,
    parse_idx,
    read_idx,
    read_idx_with_digest,
    write_idx,
)
from digitnet.errors import DataError

ALL_DTYPES = ["uint8", "int8", "int16", "int32", "float32", "float64"]


def _sample(dtype: str, shape=(3, 4, 5)) -> np.ndarray:
    """Values that exercise the sign bit, both extremes and (for floats) non-integers."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape))
    if dt.kind == "f":
        values = np.linspace(-1e6, 1e6, n).astype(dt)
        values.flat[0] = np.finfo(dt).max
        values.flat[1] = np.finfo(dt).tiny
        values.flat[2] = -0.0
        values.flat[3] = np.inf
        values.flat[4] = np.nan
    else:
        info = np.iinfo(dt)
        values = np.linspace(info.min, info.max, n).astype(dt)
    return values.reshape(shape)


def _header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def test_every_idx_type_code_is_covered():
    assert sorted(IDX_DTYPES) == [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_round_trip_every_dtype(tmp_path, dtype, name):
    array = _sample(dtype)
    path = tmp_path / name
    write_idx(path, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)  # NaN == NaN here
    assert back.flags.writeable


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_on_disk_bytes_are_big_endian(tmp_path, dtype):
    array = _sample(dtype, shape=(7,))
    write_idx(tmp_path / "x", array)
    raw = (tmp_path / "x").read_bytes()
    code = {v.newbyteorder("=").name: k for k, v in IDX_DTYPES.items()}[np.dtype(dtype).name]
    assert raw[:8] == _header(code, (7,))
    assert raw[8:] == array.astype(np.dtype(dtype).newbyteorder(">")).tobytes()


def test_big_endian_input_is_written_correctly(tmp_path):
    array = np.arange(10, dtype=">i4") * 1000
    write_idx(tmp_path / "x.gz", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.gz"), np.arange(10) * 1000)


@pytest.mark.parametrize("shape", [(5,), (2, 3), (2, 0, 3), (1, 1, 1, 1, 2)])
def test_shapes(tmp_path, shape):
    array = np.arange(int(np.prod(shape)), dtype=np.int16).reshape(shape)
    write_idx(tmp_path / "x.gz", array)
    back = read_idx(tmp_path / "x.gz")
    assert back.shape == shape
    np.testing.assert_array_equal(back, array)


@given(hnp.arrays(dtype=st.sampled_from(ALL_DTYPES), shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=6)))
@settings(max_examples=60, deadline=None)
def test_round_trip_property(array):
    for compressed in (False, True):
        data = idx_bytes(array) if not compressed else gzip.compress(idx_bytes(array))
        back = parse_idx(data)
        assert back.dtype == array.dtype and back.shape == array.shape
        np.testing.assert_array_equal(back, array)


def test_gzip_is_detected_by_content_not_name(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_idx(tmp_path / "compressed.idx", array, compress=True)
    write_idx(tmp_path / "plain.gz", array, compress=False)
    assert (tmp_path / "compressed.idx").read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(tmp_path / "compressed.idx"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "plain.gz"), array)


def test_gzip_output_is_reproducible(tmp_path):
    array = np.arange(1000, dtype=np.float32)
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "b.gz", array)
    data = (tmp_path / "a.gz").read_bytes()
    assert data == (tmp_path / "b.gz").read_bytes()
    assert data[3] == 0 and data[4:8] == bytes(4)  # no file name flag, time stamp 0


def test_concatenated_gzip_members_and_zero_padding(tmp_path):
    raw = idx_bytes(np.arange(100, dtype=np.uint8))
    data = gzip.compress(raw[:30]) + gzip.compress(raw[30:]) + b"\0" * 16
    (tmp_path / "x").write_bytes(data)
    np.testing.assert_array_equal(read_idx(tmp_path / "x"), np.arange(100))


def test_digest_is_of_decompressed_bytes(tmp_path):
    raw = idx_bytes(np.arange(50, dtype=np.int32))
    (tmp_path / "x.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "x").write_bytes(raw)
    expected = hashlib.sha256(raw).hexdigest()
    assert read_idx_with_digest(tmp_path / "x.gz")[1] == expected
    assert read_idx_with_digest(tmp_path / "x")[1] == expected
    assert content_sha256(tmp_path / "x.gz") == expected
    assert content_sha256(tmp_path / "x") == expected


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    write_idx(tmp_path / "x.gz", np.zeros(3, np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["x.gz"]


@pytest.mark.parametrize("dtype", ["int64", "uint16", "bool", "complex64"])
def test_write_rejects_types_idx_cannot_store(tmp_path, dtype):
    with pytest.raises(DataError, match="cannot store dtype"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=dtype))
    assert not (tmp_path / "x").exists()


def test_write_rejects_scalars(tmp_path):
    with pytest.raises(DataError, match="dimensions"):
        write_idx(tmp_path / "x", np.uint8(3))


# ------------------------------------------------------------------------------ bad input


@pytest.fixture(params=["raw", "gz"])
def writer(request, tmp_path):
    """Write given bytes to a file, gzipped or not; returns the path."""

    def write(data: bytes):
        path = tmp_path / ("bad.gz" if request.param == "gz" else "bad")
        path.write_bytes(gzip.compress(data) if request.param == "gz" else data)
        return path

    return write


def test_wrong_magic(writer):
    path = writer(b"\x08\x03\x00\x00" + bytes(100))
    with pytest.raises(DataError, match=r"not an IDX file.*first two bytes must be 00 00, found 08 03"):
        read_idx(path)


def test_wrong_magic_text_hint(writer):
    with pytest.raises(DataError, match="looks like a text/CSV file"):
        read_idx(writer(b"label,pixel0,pixel1\n1,2,3\n"))


def test_unknown_type_code(writer):
    path = writer(_header(0x0A, (3,)) + bytes(3))
    with pytest.raises(DataError, match="unknown IDX type code 0x0A"):
        read_idx(path)


@pytest.mark.parametrize("ndim", [0, 200])
def test_bad_number_of_dimensions(writer, ndim):
    path = writer(bytes([0, 0, 8, ndim]) + bytes(4 * ndim + 10))
    with pytest.raises(DataError, match=f"declares {ndim} dimensions"):
        read_idx(path)


def test_truncated_header(writer):
    path = writer(bytes([0, 0, 8, 3]) + struct.pack(">I", 10))
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(path)


def test_too_short_and_empty(writer):
    with pytest.raises(DataError, match="too short"):
        read_idx(writer(b"\0\0"))
    with pytest.raises(DataError, match="empty"):
        read_idx(writer(b""))


def test_truncated_data_names_file_and_byte_counts(writer):
    path = writer(_header(0x08, (10, 28, 28)) + bytes(7000))
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message and "truncated" in message
    assert "7,856" in message  # expected: 16 header + 7,840 data bytes
    assert "7,016" in message  # actual


def test_too_long_data_names_file_and_byte_counts(writer):
    path = writer(_header(0x0B, (10,)) + bytes(25))  # 10 int16 = 20 bytes, 5 too many
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message and "longer than its header says" in message
    assert re.search(r"which is 28 (decompressed )?bytes", message)  # 8 header + 10 x 2 data bytes
    assert "holds 33" in message


def test_header_claiming_gigabytes_fails_fast_without_allocating(writer):
    path = writer(_header(0x0E, (65535, 65535, 65535)) + bytes(100))
    start = time.perf_counter()
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)
    assert time.perf_counter() - start < 2


def test_gzip_bomb_is_not_fully_inflated(tmp_path):
    # Declares 100 bytes, then carries 64 MB of zeros: the reader stops soon after the surplus starts
    # ("at least"), it does not inflate everything to count it.
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    body = compressor.compress(_header(0x08, (100,)) + bytes(100))
    body += b"".join(compressor.compress(bytes(1 << 20)) for _ in range(64)) + compressor.flush()
    (tmp_path / "bomb.gz").write_bytes(body)
    with pytest.raises(DataError, match=r"longer than its header says.*holds at least"):
        read_idx(tmp_path / "bomb.gz")


def test_corrupt_gzip(tmp_path):
    data = bytearray(gzip.compress(idx_bytes(np.arange(5000, dtype=np.int32))))
    data[len(data) // 2] ^= 0xFF
    data[len(data) // 2 + 1] ^= 0xFF
    (tmp_path / "x.gz").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"x\.gz.*corrupt gzip"):
        read_idx(tmp_path / "x.gz")
    with pytest.raises(DataError, match="corrupt gzip"):
        content_sha256(tmp_path / "x.gz")


def test_gzip_crc_mismatch(tmp_path):
    data = bytearray(gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8))))
    data[-8] ^= 0xFF  # the CRC32 in the trailer
    (tmp_path / "x.gz").write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt gzip"):
        read_idx(tmp_path / "x.gz")


@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_gzip(tmp_path, keep):
    data = gzip.compress(idx_bytes(np.random.default_rng(0).integers(0, 255, 20000, dtype=np.uint8)))
    (tmp_path / "x.gz").write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DataError, match="truncated gzip"):
        read_idx(tmp_path / "x.gz")
    with pytest.raises(DataError, match="truncated gzip"):
        content_sha256(tmp_path / "x.gz")


def test_gzip_missing_only_its_trailer(tmp_path):
    data = gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8)))
    (tmp_path / "x.gz").write_bytes(data[:-8])
    with pytest.raises(DataError, match="truncated gzip"):
        read_idx(tmp_path / "x.gz")


def test_garbage_after_gzip(tmp_path):
    (tmp_path / "x.gz").write_bytes(gzip.compress(idx_bytes(np.arange(3, dtype=np.uint8))) + b"junk")
    with pytest.raises(DataError, match="unexpected bytes after the end of the gzip data"):
        read_idx(tmp_path / "x.gz")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "nope.gz")
    with pytest.raises(DataError, match="is a directory"):
        read_idx(tmp_path)


# ------------------------------------------------------------------------------ real MNIST


def test_real_mnist_files(mnist_path):
    images = read_idx(next(mnist_path.glob("train-images-idx3-ubyte*")))
    labels = read_idx(next(mnist_path.glob("train-labels-idx1-ubyte*")))
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60000,) and labels.dtype == np.uint8
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the well-known first labels
    assert images.max() == 255 and images.min() == 0
