"""Load MNIST-style data from the file formats people actually have, chosen by content.

:func:`load_file` looks at the first bytes, not the name:

============================  ==============================================================
content starts with           read as
============================  ==============================================================
``1f 8b`` (gzip)              whatever is inside: IDX (``00 00``) or CSV text
``00 00``                     IDX images (labels from the sibling ``*-labels-idx1-ubyte[.gz]``)
``PK``  (zip)                 ``.npz`` if it holds ``.npy`` arrays (Keras' ``mnist.npz``), else a
                              zip of CSV files (Kaggle's ``digit-recognizer.zip``)
text                          CSV, with or without a header row
a directory                   a folder of the four IDX files (``split`` picks train or test)
============================  ==============================================================

CSV layouts (784 = 28x28 pixels, 0-255, row by row):

* Kaggle "Digit Recognizer" ``train.csv``: header ``label,pixel0,...,pixel783``, then
  label + 784 pixels per line; ``test.csv``: header ``pixel0,...,pixel783``, 784 pixels, no label.
* ``mnist_train.csv`` / ``mnist_test.csv`` (no header): label + 784 pixels per line.
* A headerless file of 784 columns is read as unlabeled pixels.

Parsing uses NumPy's C ``loadtxt`` straight into uint8. It is fast but its error messages are vague
and its row numbers skip blank lines, so on any problem a second, careful pass finds the first bad
line and says exactly what is wrong.
"""

from __future__ import annotations

import math
import os
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from digitnet.data.dataset import DIGIT_CLASSES, Dataset
from digitnet.errors import DataError

N_PIXELS = 784
IMAGE_SHAPE = (28, 28)
_BOM = b"\xef\xbb\xbf"
_LAYOUTS = "785 columns (label + 784 pixels) or 784 (pixels only)"
_LABEL_NAMES = {"label", "labels", "class", "digit", "target", "y"}


def sniff_format(path: str | os.PathLike) -> str:
    """Name the format of ``path`` from its content: "idx", "npz", "zip-csv", "csv" or "directory".

    Raises DataError for a missing, empty or unrecognised file.
    """
    from digitnet.data.idx import peek_contents

    path = Path(path)
    if path.is_dir():
        return "directory"
    head = peek_contents(path, 4096)
    if not head:
        raise DataError(f"{path}: file is empty")
    if head[:2] == b"\0\0":
        return "idx"
    if head[:2] == b"PK":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"{path}: looks like a zip file but cannot be opened: {exc}") from None
        if any(n.endswith(".npy") for n in names):
            return "npz"
        if any(n.lower().endswith(".csv") for n in names):
            return "zip-csv"
        raise DataError(f"{path}: a zip file with neither .npy arrays nor .csv files: {names[:5]}")
    if head.startswith(b"\x93NUMPY"):
        raise DataError(f"{path}: a single .npy array; save images and labels together with "
                        "np.savez(path, x_train=images, y_train=labels) and load that")
    text = head[len(_BOM):] if head.startswith(_BOM) else head
    if all(32 <= b < 127 or b in (9, 10, 13) for b in text):
        return "csv"
    raise DataError(f"{path}: unrecognised format (expected IDX, gzip, CSV, .npz or a zip of CSVs)")


def load_file(path: str | os.PathLike, split: str | None = None) -> Dataset:
    """Load a dataset from one file (or folder) whatever its format; see the module docstring.

    Args:
        path: an IDX images file, a CSV file, an ``.npz``, a zip of CSVs, or a folder of IDX files.
        split: for sources that hold several splits (npz, folder, zip of CSVs): "train" (default)
            or "test". Giving a split for a single-split source (CSV, one IDX file) is an error,
            so that ``--split test`` can never silently evaluate on training data.

    Returns:
        Dataset with images uint8 ``[N, 28, 28]`` and labels uint8 ``[N]`` (None for unlabeled
        sources such as Kaggle's test.csv). Class names are the digits, or Fashion-MNIST's names
        when the IDX labels are recognised as Fashion-MNIST's by checksum.

    Raises:
        DataError: missing, empty, malformed or out-of-range data; messages name the file and line.
    """
    path = Path(path)
    fmt = sniff_format(path)
    if fmt == "directory":
        return _load_idx_folder(path, split or "train")
    if fmt == "npz":
        return _load_npz(path, split or "train")
    if fmt == "zip-csv":
        return _load_zip_csv(path, split)
    if split is not None:
        raise DataError(f"{path} holds a single split; a split ({split!r}) only applies to .npz files, "
                        "zips of CSVs and folders of IDX files")
    if fmt == "idx":
        return _load_idx_images(path)
    from digitnet.data.idx import open_decompressed

    return read_csv(lambda: open_decompressed(path), name=path.name, source=str(path))


# ----------------------------------------------------------------------------------------- IDX


def _classes_for_labels(digest: str) -> tuple[list[str], str | None]:
    """Class names (and "dataset/split") for a labels file recognised by its checksum."""
    from digitnet.data.datasets import KNOWN_DIGESTS, REGISTRY

    known = KNOWN_DIGESTS.get(digest)
    if known is None:
        return list(DIGIT_CLASSES), None
    return list(REGISTRY[known[0]].classes), f"{known[0]}/{known[1]}"


def _labels_sibling(images: Path) -> Path | None:
    name = images.name
    if "images" not in name:
        return None
    stem = name.replace("images", "labels").replace("idx3", "idx1")
    stem = stem[:-3] if stem.lower().endswith(".gz") else stem
    for candidate in (stem, stem + ".gz"):
        if (images.parent / candidate).is_file():
            return images.parent / candidate
    return None


def _idx_dataset(images_path: Path, labels_path: Path | None) -> Dataset:
    from digitnet.data.idx import read_idx, read_idx_with_digest

    images = read_idx(images_path)
    if images.ndim == 1:
        raise DataError(f"{images_path} is a labels file (1-D); pass the images file instead")
    if images.ndim == 2 and images.shape[1] == N_PIXELS:
        images = images.reshape(-1, *IMAGE_SHAPE)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected uint8 images [N, 28, 28], got {images.dtype} "
                        f"{images.shape}")
    labels = None
    classes, name = list(DIGIT_CLASSES), None
    if labels_path is not None:
        labels, digest = read_idx_with_digest(labels_path)
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"{labels_path}: expected {len(images)} labels for {images_path.name}, got "
                            f"shape {labels.shape}")
        _check_labels(labels, str(labels_path))
        classes, name = _classes_for_labels(digest)
    return Dataset(images=images, labels=labels, classes=classes, name=name or images_path.name,
                   source=f"{images_path}" + (f", {labels_path}" if labels_path else ""))


def _load_idx_images(path: Path) -> Dataset:
    return _idx_dataset(path, _labels_sibling(path))


def _load_idx_folder(folder: Path, split: str) -> Dataset:
    from digitnet.data.datasets import MNIST, _find_file

    if split not in MNIST.files:
        raise DataError(f"unknown split {split!r}; choose 'train' or 'test'")
    images_spec, labels_spec = MNIST.files[split]  # both datasets use the same file names
    images = _find_file(folder, images_spec)
    if images is None:
        raise DataError(f"{folder}: no {images_spec.stem}[.gz] in this folder")
    return _idx_dataset(images, _find_file(folder, labels_spec))


# ----------------------------------------------------------------------------------------- npz


#: deflate expands data at most ~1032 times; a zip member claiming more is corrupt (or a zip bomb)
_MAX_DEFLATE_RATIO = 1032


def _check_npy_sizes(path: Path) -> None:
    """Refuse a .npy member whose header claims more bytes than the member holds.

    ``np.load`` allocates the array a header claims before reading any data, so a 1 KB file
    claiming shape (10**9, 784) would otherwise ask for 784 GB (MemoryError, or gigabytes of
    address space). The member's uncompressed size is bounded by its compressed size first.
    """
    from numpy.lib import format as npy

    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            where = f"{path} [{info.filename}]"
            ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _MAX_DEFLATE_RATIO
            if info.file_size > info.compress_size * ratio + 1024:
                raise DataError(f"{where}: claims {info.file_size:,} bytes from {info.compress_size:,} "
                                "compressed: corrupt file")
            with archive.open(info) as member:
                version = npy.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = npy.read_array_header_1_0(member)
                elif version == (2, 0):
                    shape, _, dtype = npy.read_array_header_2_0(member)
                else:
                    raise DataError(f"{where}: unsupported .npy format version {version}")
            claimed = math.prod(shape) * dtype.itemsize
            if claimed > info.file_size:
                raise DataError(f"{where}: the header claims shape {shape} of {dtype} ({claimed:,} bytes) but "
                                f"the file holds {info.file_size:,} bytes: truncated or corrupt")


def _load_npz(path: Path, split: str) -> Dataset:
    try:
        _check_npy_sizes(path)
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            pairs = [(f"x_{split}", f"y_{split}"), ("images", "labels"), ("x", "y")]
            for x_key, y_key in pairs:
                if x_key in keys:
                    images = archive[x_key]
                    labels = archive[y_key] if y_key in keys else None
                    break
            else:
                raise DataError(f"{path}: no images for split {split!r}; expected arrays x_{split}/y_{split} "
                                f"(Keras layout) or images/labels, found {keys}")
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, zlib.error, NotImplementedError,
            RuntimeError) as exc:
        # ValueError includes "Object arrays cannot be loaded when allow_pickle=False"; zlib.error a
        # corrupt deflate stream; NotImplementedError an unknown compression method; RuntimeError
        # an encrypted member.
        raise DataError(f"{path}: cannot read as .npz: {exc}") from None
    name = f"{path.name}:{split}" if x_key.startswith("x_") else path.name
    images = _as_pixels(images, f"{path} [{x_key}]")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"{path} [{y_key}]: expected {len(images)} labels, got shape {labels.shape}")
        labels = _check_labels(labels, f"{path} [{y_key}]")
    return Dataset(images=images, labels=labels, name=name, source=str(path))


def _as_pixels(images: np.ndarray, where: str) -> np.ndarray:
    """Validate images from an array source as uint8 ``[N, 28, 28]`` (``[N, 784]`` is reshaped)."""
    images = np.asarray(images)
    if images.ndim == 2 and images.shape[1] == N_PIXELS:
        images = images.reshape(-1, *IMAGE_SHAPE)
    if images.ndim != 3:
        raise DataError(f"{where}: expected images [N, 28, 28] or [N, 784], got shape {images.shape}")
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind not in "iuf":
        raise DataError(f"{where}: expected numeric pixels, got dtype {images.dtype}")
    if images.size and (images.min() < 0 or images.max() > 255 or
                        (images.dtype.kind == "f" and not np.array_equal(images, np.round(images)))):
        raise DataError(f"{where}: pixels must be whole numbers 0-255 (found {images.dtype} values from "
                        f"{images.min()} to {images.max()}); scaled [0, 1] data is not accepted")
    return images.astype(np.uint8)


def _check_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """Labels must be whole numbers 0-9; returns them as uint8."""
    if labels.dtype.kind not in "iuf":
        raise DataError(f"{where}: labels must be numbers, got dtype {labels.dtype}")
    if labels.size:
        bad = np.flatnonzero((labels < 0) | (labels > 9) | (labels != np.round(labels)))
        if bad.size:
            i = int(bad[0])
            raise DataError(f"{where}: label {labels[i]} at index {i} is outside 0-9")
    return labels.astype(np.uint8)


# ----------------------------------------------------------------------------------------- CSV


def _load_zip_csv(path: Path, split: str | None) -> Dataset:
    with zipfile.ZipFile(path) as archive:
        members = [n for n in archive.namelist() if n.lower().endswith(".csv")]
    wanted = split or "train"
    chosen = [m for m in members if Path(m).name.lower() in (f"{wanted}.csv", f"mnist_{wanted}.csv")]
    if not chosen and split is None and len(members) == 1:
        chosen = members
    if not chosen:
        raise DataError(f"{path}: no {wanted}.csv in the zip (it holds {members})")
    member = chosen[0]

    def opener() -> BinaryIO:
        # The member stream keeps the zip's file open after the ZipFile itself is closed.
        with zipfile.ZipFile(path) as archive:
            return archive.open(member)  # type: ignore[return-value]

    try:
        return read_csv(opener, name=f"{path.name}:{member}", source=f"{path} [{member}]")
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
        # a damaged zip shows up only while the member is read (bad CRC, corrupt deflate, bad offsets)
        raise DataError(f"{path}: cannot read {member} from the zip: {exc}") from None


def _is_int_token(token: bytes) -> bool:
    return token.strip().isdigit()


def _unquote(token: bytes) -> str:
    return token.strip().strip(b"\"'").decode("latin-1").lower()


def read_csv(opener: Callable[[], BinaryIO], name: str, source: str = "") -> Dataset:
    """Read one CSV in any of the supported layouts (see the module docstring).

    Args:
        opener: returns a fresh binary stream of the CSV each call (called twice on bad input, to
            find the first bad line after the fast parser failed).
        name: used in messages ("train.csv").

    Raises:
        DataError: empty file, wrong column count, non-numeric value, pixel outside 0-255 or label
            outside 0-9; the message gives the line number (1-based, counting the header).
    """
    with opener() as stream:
        first = stream.readline()
        offset = len(_BOM) if first.startswith(_BOM) else 0
        first_line = first[offset:]
        if not first_line.strip():
            rest = stream.read(1 << 16)
            if not first_line and not rest:
                raise DataError(f"{name}: file is empty")
            raise DataError(f"{name} line 1: empty line where the header or first row should be")
        tokens = first_line.strip().split(b",")
        header = not all(_is_int_token(t) for t in tokens)
        n_cols = len(tokens)
        if n_cols not in (N_PIXELS + 1, N_PIXELS):
            raise DataError(f"{name} line 1: {n_cols} columns; expected {_LAYOUTS}")
        labeled = n_cols == N_PIXELS + 1
        if header and labeled and _unquote(tokens[0]) not in _LABEL_NAMES:
            raise DataError(f"{name} line 1: the first column is {tokens[0].decode('latin-1')!r}; "
                            "expected the label there ('label', as in Kaggle's train.csv)")
        if not header:
            stream.seek(offset)  # the first line is data: parse it too
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "input contained no data": handled below
                table = np.loadtxt(stream, delimiter=",", dtype=np.uint8, ndmin=2, comments=None)
        except ValueError as exc:
            raise DataError(_find_csv_error(opener, name, n_cols, header) or f"{name}: {exc}") from None
    if table.shape[0] == 0:
        raise DataError(f"{name}: no data rows after the header")
    if table.shape[1] != n_cols:  # pragma: no cover - loadtxt enforces a constant column count
        raise DataError(f"{name}: expected {n_cols} columns, found {table.shape[1]}")
    labels = None
    if labeled:
        labels = table[:, 0].copy()
        if labels.max() > 9:
            raise DataError(_find_csv_error(opener, name, n_cols, header)
                            or f"{name}: a label is outside 0-9")
        images = np.ascontiguousarray(table[:, 1:])
        del table  # drop the 785-column copy before building the Dataset
    else:
        images = table
    return Dataset(images=images.reshape(-1, *IMAGE_SHAPE), labels=labels, name=name, source=source or name)


def _find_csv_error(opener: Callable[[], BinaryIO], name: str, n_cols: int, header: bool) -> str | None:
    """Scan the CSV line by line for the first problem; a message with its line number, or None."""
    labeled = n_cols == N_PIXELS + 1
    with opener() as stream:
        for lineno, raw in enumerate(stream, start=1):
            line = raw[len(_BOM):] if lineno == 1 and raw.startswith(_BOM) else raw
            if lineno == 1 and header:
                continue
            line = line.strip()
            if not line:
                continue  # loadtxt skips blank lines too
            parts = line.split(b",")
            if len(parts) != n_cols:
                layout = "label + 784 pixels" if labeled else "784 pixels"
                return f"{name} line {lineno}: {len(parts)} columns, expected {n_cols} ({layout})"
            # Fast check of a whole line; only a bad line is examined value by value.
            if all(p.strip().isdigit() for p in parts):
                values = [int(p) for p in parts]
                if max(values) <= 255 and (not labeled or values[0] <= 9):
                    continue
            for col, part in enumerate(parts, start=1):
                problem = _value_problem(part.strip().decode("latin-1"), labeled and col == 1)
                if problem:
                    return f"{name} line {lineno}, column {col}: {problem}"
    return None


def _value_problem(text: str, is_label: bool) -> str | None:
    """What is wrong with one CSV value, or None."""
    what, limit = ("label", 9) if is_label else ("pixel", 255)
    if not text:
        return f"empty {what} value"
    try:
        value = float(text)
    except ValueError:
        return f"non-numeric {what} value {text!r}"
    if text.isdigit():
        return None if int(text) <= limit else f"{what} {text} is outside 0-{limit}"
    if math.isfinite(value) and value == int(value) and not 0 <= value <= limit:
        return f"{what} {text} is outside 0-{limit}"
    return f"{what} {text!r} is not written as a whole number 0-{limit}"
