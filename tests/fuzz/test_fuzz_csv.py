"""Fuzzing the CSV reader (digitnet.data.formats): Kaggle and headerless layouts, mutated."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from digitnet.data.formats import load_file, read_csv
from tests.fuzz.support import fuzz_settings, mutate, mutated

pytestmark = pytest.mark.timeout(60)

HEADER_LABELED = "label," + ",".join(f"pixel{i}" for i in range(784))
HEADER_PIXELS = ",".join(f"pixel{i}" for i in range(784))


def _rows(labeled: bool, count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        pixels = np.where(rng.random(784) < 0.8, 0, rng.integers(0, 256, 784))
        values = ([int(rng.integers(0, 10))] if labeled else []) + pixels.tolist()
        rows.append(",".join(map(str, values)))
    return rows


def _seeds() -> list[bytes]:
    kaggle_train = "\n".join([HEADER_LABELED, *_rows(True, 2, 0)]) + "\n"
    kaggle_test = "\r\n".join([HEADER_PIXELS, *_rows(False, 1, 1)]) + "\r\n"
    mnist_csv = "\n".join(_rows(True, 2, 2))  # no header, no final newline
    bom = "\ufeff" + "\n".join([HEADER_LABELED, *_rows(True, 1, 3)]) + "\n"
    return [s.encode("utf-8") for s in (kaggle_train, kaggle_test, mnist_csv, bom)]


SEEDS = _seeds()
# CSV-ish damage: values that are nearly numbers, separators, quotes, blank lines
TOKENS = ["", "-1", "256", "999999999999999999999", "1.5", "1e3", " 7 ", "nan", "inf", "0x10", "\"3\"",
          ",", ",,", "\n", "\r\n", "\n\n", "\t", ";", "\x00", "\xef\xbb\xbf", "label", "#", "é"]


@st.composite
def damaged_csv(draw) -> bytes:
    """A valid CSV with a few of its numbers replaced by CSV-ish junk, then maybe byte-mutated."""
    text = draw(st.sampled_from(SEEDS)).decode("utf-8")
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(text)))
        end = pos + draw(st.integers(0, 4))
        text = text[:pos] + draw(st.sampled_from(TOKENS)) + text[end:]
    data = text.encode("utf-8")
    if draw(st.booleans()):
        data, _ = mutate(data, np.random.default_rng(draw(st.integers(0, 2**32 - 1))), max_ops=2)
    return data


def check(dataset, data: bytes) -> None:
    if dataset is None:
        return
    assert dataset.images.dtype == np.uint8 and dataset.images.shape[1:] == (28, 28)
    assert len(dataset.images) <= data.count(b"\n") + 1
    if dataset.labels is not None:
        assert dataset.labels.shape == (len(dataset.images),) and dataset.labels.max(initial=0) <= 9


def parse(data: bytes):
    return read_csv(lambda: io.BytesIO(data), name="fuzz.csv")


@fuzz_settings(300)
@given(data=st.binary(max_size=200) | st.text(alphabet="0123456789,\n -.", max_size=200).map(str.encode))
def test_random_text(memory, data):
    check(memory.run(lambda: parse(data), len(data)), data)


@fuzz_settings(500)
@given(data=damaged_csv())
def test_damaged_valid_files(memory, data):
    check(memory.run(lambda: parse(data), len(data)), data)


@fuzz_settings(150)
@given(data=damaged_csv())
def test_load_file_sniffs_and_reads(memory, tmp_path, data):
    """Through load_file: content sniffing (CSV, or whatever the damage made it look like) first."""
    path = tmp_path / "train.csv"
    path.write_bytes(data)
    check(memory.run(lambda: load_file(path), len(data)), data)


def _zip_of_csv(compression: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        archive.writestr("train.csv", SEEDS[0])
        archive.writestr("test.csv", SEEDS[1])
    return buffer.getvalue()


ZIP_SEEDS = [_zip_of_csv(zipfile.ZIP_DEFLATED), _zip_of_csv(zipfile.ZIP_STORED)]


@fuzz_settings(300)
@given(data=mutated(ZIP_SEEDS))
def test_mutated_zips_of_csv(memory, tmp_path, data):
    """Kaggle's digit-recognizer.zip layout: a zip holding train.csv and test.csv."""
    path = tmp_path / "digit-recognizer.zip"
    path.write_bytes(data)
    check(memory.run(lambda: load_file(path), len(data)), data)


def test_seeds_are_valid(tmp_path):
    (tmp_path / "z.zip").write_bytes(ZIP_SEEDS[0])
    assert len(load_file(tmp_path / "z.zip").images) == 2
    assert load_file(tmp_path / "z.zip", split="test").labels is None
    for data in SEEDS:
        dataset = parse(data)
        assert len(dataset.images) >= 1
