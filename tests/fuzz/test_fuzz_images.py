"""Fuzzing the image loader (digitnet.data.images): damaged PNG/JPEG/BMP/GIF/WebP files and odd arrays."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from digitnet.data.images import load_digit, load_image, preprocess
from tests.fuzz.support import fuzz_settings, mutated

pytestmark = pytest.mark.timeout(90)


def _digit(height: int = 36, width: int = 30) -> np.ndarray:
    """Dark ink on white paper: a rough '7'."""
    pixels = np.full((height, width), 240, np.uint8)
    pixels[6:10, 6:24] = 20
    for row in range(10, 30):
        col = 22 - (row - 10) // 2
        pixels[row, col:col + 4] = 20
    return pixels


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _seeds() -> list[bytes]:
    gray = Image.fromarray(_digit())
    rgba = Image.fromarray(np.dstack([_digit()] * 3 + [np.full((36, 30), 255, np.uint8)]))
    return [_encode(gray, "PNG"), _encode(rgba, "PNG"), _encode(gray, "JPEG", quality=80),
            _encode(gray.convert("RGB"), "BMP"), _encode(gray.convert("P"), "GIF"),
            _encode(gray, "WEBP", lossless=True)]


SEEDS = _seeds()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@st.composite
def png_with_any_header(draw) -> bytes:
    """A PNG whose IHDR (with a correct CRC) claims any size, bit depth and colour type."""
    width = draw(st.sampled_from([0, 1, 2, 28, 5000, 40_000, 2**31 - 1]))
    height = draw(st.sampled_from([0, 1, 3, 28, 5000, 40_000, 2**31 - 1]))
    depth = draw(st.sampled_from([1, 2, 4, 8, 16, 3]))
    colour = draw(st.sampled_from([0, 2, 3, 4, 6, 5]))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, draw(st.sampled_from([0, 1])))
    pixels = zlib.compress(draw(st.binary(max_size=200)))
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", pixels)
            + _png_chunk(b"IEND", b""))


def check(result) -> None:
    if result is not None:
        assert result.dtype == np.uint8 and result.ndim == 2


@fuzz_settings(450)
@given(data=mutated(SEEDS))
def test_mutated_image_files(memory, data):
    check(memory.run(lambda: load_digit(data), len(data)))


@fuzz_settings(120)
@given(data=png_with_any_header())
def test_png_headers_that_claim_any_size(memory, data):
    check(memory.run(lambda: load_image(data), len(data)))


@fuzz_settings(150)
@given(data=st.binary(max_size=64))
def test_random_bytes(memory, data):
    check(memory.run(lambda: load_digit(data), len(data)))


@fuzz_settings(200)
@given(array=hnp.arrays(dtype=st.sampled_from([np.uint8, np.float32, np.float64, np.bool_, np.int64]),
                        shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=40)))
def test_arrays_of_any_shape_and_dtype(memory, array):
    check(memory.run(lambda: preprocess(array), array.nbytes))


@fuzz_settings(120)
@given(array=hnp.arrays(dtype=np.float64, shape=st.tuples(st.integers(1, 40), st.integers(1, 40)),
                        elements=st.floats(allow_nan=True, allow_infinity=True, width=64)))
def test_float_arrays_with_nan_and_inf(memory, array):
    check(memory.run(lambda: preprocess(array), array.nbytes))


def test_seeds_are_valid():
    for data in SEEDS:
        digit = load_digit(data)
        assert digit.shape == (28, 28) and digit.max() > 200
