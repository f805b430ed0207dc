"""load_file: Kaggle CSV, headerless CSV, Keras npz, zips and IDX, chosen by content; every bad input."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pytest

from digitnet.data.formats import load_file, sniff_format
from digitnet.data.idx import write_idx
from digitnet.errors import DataError
from tests.conftest import skip_or_fail

KAGGLE_TRAIN_HEADER = "label," + ",".join(f"pixel{i}" for i in range(784))
KAGGLE_TEST_HEADER = ",".join(f"pixel{i}" for i in range(784))


@pytest.fixture
def digits(rng):
    """Five small random "images" uint8 [5, 28, 28] and labels uint8 [5]."""
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[1, 0, 0] = 0, 255
    return images, np.array([0, 9, 3, 3, 7], dtype=np.uint8)


def _rows(images, labels=None) -> list[str]:
    flat = images.reshape(len(images), -1)
    if labels is None:
        return [",".join(map(str, row)) for row in flat]
    return [f"{label}," + ",".join(map(str, row)) for label, row in zip(labels, flat, strict=True)]


def _write(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.write_text(newline.join(lines) + newline)
    return path


def _check(data, images, labels):
    assert data.images.dtype == np.uint8 and data.images.shape == images.shape
    np.testing.assert_array_equal(data.images, images)
    if labels is None:
        assert data.labels is None
    else:
        np.testing.assert_array_equal(data.labels, labels)


# ------------------------------------------------------------------------------ CSV layouts


def test_kaggle_train_csv(tmp_path, digits):
    images, labels = digits
    path = _write(tmp_path / "train.csv", [KAGGLE_TRAIN_HEADER, *_rows(images, labels)])
    data = load_file(path)
    _check(data, images, labels)
    assert data.name == "train.csv" and data.classes == [str(d) for d in range(10)]


def test_kaggle_test_csv_has_no_labels(tmp_path, digits):
    images, _ = digits
    data = load_file(_write(tmp_path / "test.csv", [KAGGLE_TEST_HEADER, *_rows(images)]))
    _check(data, images, None)


def test_headerless_mnist_train_csv(tmp_path, digits):
    images, labels = digits
    _check(load_file(_write(tmp_path / "mnist_train.csv", _rows(images, labels))), images, labels)


def test_headerless_pixels_only(tmp_path, digits):
    images, _ = digits
    _check(load_file(_write(tmp_path / "pixels.csv", _rows(images))), images, None)


def test_single_row(tmp_path, digits):
    images, labels = digits
    _check(load_file(_write(tmp_path / "one.csv", _rows(images[:1], labels[:1]))), images[:1], labels[:1])


def test_windows_line_endings_bom_and_blank_lines(tmp_path, digits):
    images, labels = digits
    text = "\r\n".join([KAGGLE_TRAIN_HEADER, *_rows(images, labels)]) + "\r\n\r\n"
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    _check(load_file(path), images, labels)
    headerless = tmp_path / "bom-no-header.csv"
    headerless.write_bytes(b"\xef\xbb\xbf" + "\n".join(_rows(images, labels)).encode())
    _check(load_file(headerless), images, labels)


def test_gzipped_csv_detected_by_content(tmp_path, digits):
    images, labels = digits
    text = "\n".join([KAGGLE_TRAIN_HEADER, *_rows(images, labels)]) + "\n"
    path = tmp_path / "data.bin"
    path.write_bytes(gzip.compress(text.encode()))
    assert sniff_format(path) == "csv"
    _check(load_file(path), images, labels)


def test_kaggle_zip_with_both_csvs(tmp_path, digits):
    images, labels = digits
    path = tmp_path / "digit-recognizer.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train.csv", "\n".join([KAGGLE_TRAIN_HEADER, *_rows(images, labels)]) + "\n")
        archive.writestr("test.csv", "\n".join([KAGGLE_TEST_HEADER, *_rows(images[:2])]) + "\n")
        archive.writestr("sample_submission.csv", "ImageId,Label\n1,0\n")
    assert sniff_format(path) == "zip-csv"
    _check(load_file(path), images, labels)
    _check(load_file(path, split="test"), images[:2], None)


# ------------------------------------------------------------------------------ CSV errors


def _bad_csv(tmp_path, digits, bad_line: str, header: bool = True) -> Path:
    images, labels = digits
    rows = _rows(images, labels)
    rows.insert(3, bad_line)  # line 5 with the header, 4 without
    return _write(tmp_path / "bad.csv", ([KAGGLE_TRAIN_HEADER] if header else []) + rows)


@pytest.mark.parametrize(("bad_line", "message"), [
    ("3," + ",".join(["0"] * 783), r"bad\.csv line 5: 784 columns, expected 785"),
    ("3," + ",".join(["0"] * 785), r"bad\.csv line 5: 786 columns, expected 785"),
    ("3," + ",".join(["0"] * 783) + ",x", r"line 5, column 785: non-numeric pixel value 'x'"),
    ("3," + ",".join(["0"] * 100) + ",abc," + ",".join(["0"] * 683), r"line 5, column 102: non-numeric"),
    ("3," + ",".join(["0"] * 783) + ",256", r"line 5, column 785: pixel 256 is outside 0-255"),
    ("3," + ",".join(["0"] * 783) + ",-1", r"line 5, column 785: pixel -1 is outside 0-255"),
    ("3," + ",".join(["0"] * 783) + ",99999", r"pixel 99999 is outside 0-255"),
    ("3," + ",".join(["0"] * 783) + ",2.5", r"pixel '2\.5' is not written as a whole number"),
    ("3," + ",".join(["0"] * 783) + ",", r"line 5, column 785: empty pixel value"),
    ("10," + ",".join(["0"] * 784), r"line 5, column 1: label 10 is outside 0-9"),
    ("x," + ",".join(["0"] * 784), r"line 5, column 1: non-numeric label value 'x'"),
])
def test_csv_errors_name_the_line(tmp_path, digits, bad_line, message):
    with pytest.raises(DataError, match=message):
        load_file(_bad_csv(tmp_path, digits, bad_line))


def test_csv_error_line_numbers_without_header_and_with_blank_lines(tmp_path, digits):
    images, labels = digits
    rows = _rows(images, labels)
    lines = [rows[0], "", rows[1], "10," + ",".join(["0"] * 784)]
    with pytest.raises(DataError, match="line 4, column 1: label 10"):
        load_file(_write(tmp_path / "x.csv", lines))


def test_csv_wrong_column_count_on_the_first_line(tmp_path):
    with pytest.raises(DataError, match=r"line 1: 3 columns; expected 785 .* or 784"):
        load_file(_write(tmp_path / "x.csv", ["1,2,3", "4,5,6"]))


def test_csv_label_must_be_first(tmp_path):
    header = ",".join(f"pixel{i}" for i in range(784)) + ",label"
    with pytest.raises(DataError, match="first column is 'pixel0'; expected the label"):
        load_file(_write(tmp_path / "x.csv", [header, ",".join(["0"] * 785)]))


def test_empty_csv_and_header_only(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load_file(tmp_path / "empty.csv")
    with pytest.raises(DataError, match="no data rows"):
        load_file(_write(tmp_path / "header.csv", [KAGGLE_TRAIN_HEADER]))


def test_split_is_refused_for_single_split_files(tmp_path, digits):
    images, labels = digits
    path = _write(tmp_path / "train.csv", [KAGGLE_TRAIN_HEADER, *_rows(images, labels)])
    with pytest.raises(DataError, match="single split"):
        load_file(path, split="test")


# ------------------------------------------------------------------------------ npz


def test_keras_npz(tmp_path, digits):
    images, labels = digits
    path = tmp_path / "mnist.npz"
    np.savez_compressed(path, x_train=images, y_train=labels, x_test=images[:2], y_test=labels[:2])
    assert sniff_format(path) == "npz"
    _check(load_file(path), images, labels)
    _check(load_file(path, split="test"), images[:2], labels[:2])
    assert load_file(path, split="test").name == "mnist.npz:test"


def test_npz_flat_images_and_integer_labels(tmp_path, digits):
    images, labels = digits
    path = tmp_path / "flat.npz"
    np.savez(path, images=images.reshape(5, 784).astype(np.int64), labels=labels.astype(np.int64))
    _check(load_file(path), images, labels)


def test_npz_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, x_train=np.array([{"a": 1}, None], dtype=object), y_train=np.zeros(2))
    with pytest.raises(DataError, match="cannot read as .npz"):
        load_file(path)


@pytest.mark.parametrize(("arrays", "message"), [
    ({"x_val": np.zeros((2, 28, 28), np.uint8)}, "no images for split 'train'"),
    ({"x_train": np.zeros((2, 28, 28), np.float32) + 0.5}, "whole numbers 0-255"),
    ({"x_train": np.full((2, 28, 28), 300)}, "whole numbers 0-255"),
    ({"x_train": np.zeros((2, 10, 10), np.uint8)[:, 0]}, "expected images"),
    ({"x_train": np.zeros((2, 28, 28), np.uint8), "y_train": np.array([1, 10])}, "label 10 at index 1"),
    ({"x_train": np.zeros((2, 28, 28), np.uint8), "y_train": np.array([1, 2, 3])}, "expected 2 labels"),
])
def test_npz_errors(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_file(path)


# ------------------------------------------------------------------------------ IDX and sniffing


def test_idx_pair_found_by_name_whatever_the_suffix(tmp_path, digits):
    images, labels = digits
    write_idx(tmp_path / "foo-images-idx3-ubyte.csv", images, compress=True)  # misleading suffix
    assert sniff_format(tmp_path / "foo-images-idx3-ubyte.csv") == "idx"
    _check(load_file(tmp_path / "foo-images-idx3-ubyte.csv"), images, None)  # no labels file yet
    write_idx(tmp_path / "foo-labels-idx1-ubyte.csv.gz", labels)
    _check(load_file(tmp_path / "foo-images-idx3-ubyte.csv"), images, labels)


def test_idx_folder_and_labels_file_refused(tmp_path, digits):
    images, labels = digits
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    _check(load_file(tmp_path, split="test"), images, labels)
    with pytest.raises(DataError, match="no train-images-idx3-ubyte"):
        load_file(tmp_path)
    with pytest.raises(DataError, match="is a labels file"):
        load_file(tmp_path / "t10k-labels-idx1-ubyte")


def test_idx_labels_must_match_images(tmp_path, digits):
    images, labels = digits
    write_idx(tmp_path / "x-images-idx3-ubyte", images)
    write_idx(tmp_path / "x-labels-idx1-ubyte", labels[:3])
    with pytest.raises(DataError, match="expected 5 labels"):
        load_file(tmp_path / "x-images-idx3-ubyte")


def test_unrecognised_and_missing_files(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(50))
    with pytest.raises(DataError, match="unrecognised format"):
        load_file(tmp_path / "x.png")
    (tmp_path / "x.npy").write_bytes(b"\x93NUMPY" + bytes(50))
    with pytest.raises(DataError, match="single .npy array"):
        load_file(tmp_path / "x.npy")
    with pytest.raises(DataError, match="file not found"):
        load_file(tmp_path / "missing.csv")


def test_real_mnist_idx_is_recognised(mnist_path):
    data = load_file(next(mnist_path.glob("t10k-images-idx3-ubyte*")))
    assert data.name == "mnist/test" and len(data) == 10000
    assert data.class_counts().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_fashion_mnist_idx_gets_fashion_classes():
    folder = Path("/usr/share/datasets/fashion-mnist")
    if not folder.is_dir():
        skip_or_fail("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    data = load_file(folder, split="test")
    assert data.name == "fashion-mnist/test"
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"
