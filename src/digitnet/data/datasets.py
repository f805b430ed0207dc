"""The dataset registry: MNIST and Fashion-MNIST by name, found locally or downloaded, verified.

``load_dataset("mnist", "train")`` returns a :class:`Dataset` with images uint8 ``[60000, 28, 28]``
and labels uint8 ``[60000]``. The four files of a dataset are looked for, per split, in:

1. ``data_dir`` if given: ``data_dir/<name>/``, then ``data_dir/`` itself, then torchvision's
   layout ``data_dir/MNIST/raw/`` (``FashionMNIST/raw/``);
2. ``$DIGITNET_DATA/<name>/``;
3. the user cache, ``$XDG_CACHE_HOME/digitnet/<name>/`` (default ``~/.cache/digitnet/<name>/``);
4. system folders: ``/usr/share/datasets/fashion-mnist/`` (Debian's dataset-fashion-mnist);
5. otherwise the files are downloaded (unless ``download=False``) into ``data_dir/<name>/`` if a
   ``data_dir`` was given, else into the user cache.

Each file may be gzip-compressed or raw (``train-images-idx3-ubyte.gz`` or ``train-images-idx3-ubyte``,
also the ``train-images.idx3-ubyte`` spelling); a raw file is preferred when both exist (no gunzip).

Checksums: every load verifies the sha256 of each file's decompressed bytes against the published
value. The digest is computed from the buffer the reader has already filled, so it adds one SHA-256
pass and no I/O, less than the gunzip itself. That is cheap enough to do always, which is sounder
than a stamp file that can go stale (a file replaced with the same size and mtime, a read-only
DIGITNET_DATA we cannot stamp).
``verify=False`` skips it (the IDX reader still checks the header against the data length).
A file in our own cache that fails is deleted and downloaded again; a file anywhere else is the
user's, so it is reported (DataError) and never touched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitnet.data.dataset import DIGIT_CLASSES, Dataset
from digitnet.errors import ConfigError, DataError

SPLITS = ("train", "test")
ROLES = ("images", "labels")
DATA_ENV = "DIGITNET_DATA"

FASHION_CLASSES: list[str] = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                              "Sneaker", "Bag", "Ankle boot"]


@dataclass(frozen=True)
class FileSpec:
    """One published file: its name without ``.gz``, and size and sha256 of the decompressed bytes."""

    stem: str
    size: int
    sha256: str

    @property
    def gz_name(self) -> str:
        return self.stem + ".gz"

    def candidates(self) -> list[str]:
        """File names accepted on disk, in order of preference (raw first: no gunzip needed)."""
        dotted = self.stem.replace("-idx", ".idx")  # "train-images.idx3-ubyte", a common re-upload
        return [self.stem, self.gz_name, dotted, dotted + ".gz"]


@dataclass(frozen=True)
class DatasetSpec:
    """What the registry knows about one dataset."""

    name: str
    title: str
    classes: tuple[str, ...]
    files: dict[str, tuple[FileSpec, FileSpec]]  # split -> (images, labels)
    counts: dict[str, int]
    mirrors: tuple[str, ...]
    torchvision_dir: str
    system_dirs: tuple[str, ...] = field(default=())


# Sizes and sha256 of the *decompressed* files. MNIST: the values published with the files (see
# /work/shared/data/mnist/README.md; md5 of the decompressed files: 6bbc9ace..., a25bea73...,
# 2646ac64..., 27ae3e4e..., as in torchvision's old raw_data list). Fashion-MNIST: computed from
# archives whose md5 matches Zalando's published .gz md5s (8d4fb7e6..., 25c81989..., bef4ecab...,
# bb300cfd...); the decompressed md5s (f4a8712d..., 9018921c..., 8181f547..., 15d48437...) match the
# raw_data list torchvision shipped, and Debian's dataset-fashion-mnist files give the same sha256.
MNIST = DatasetSpec(
    name="mnist",
    title="MNIST",
    classes=tuple(DIGIT_CLASSES),
    files={
        "train": (
            FileSpec("train-images-idx3-ubyte", 47040016,
                     "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
            FileSpec("train-labels-idx1-ubyte", 60008,
                     "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        ),
        "test": (
            FileSpec("t10k-images-idx3-ubyte", 7840016,
                     "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
            FileSpec("t10k-labels-idx1-ubyte", 10008,
                     "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
        ),
    },
    counts={"train": 60000, "test": 10000},
    # torchvision's working mirror (yann.lecun.com has answered 403 since 2024), then the CVDF
    # mirror that TensorFlow's MNIST code and tensorflow_datasets use.
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
             "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    torchvision_dir="MNIST",
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    classes=tuple(FASHION_CLASSES),
    files={
        "train": (
            FileSpec("train-images-idx3-ubyte", 47040016,
                     "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
            FileSpec("train-labels-idx1-ubyte", 60008,
                     "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        ),
        "test": (
            FileSpec("t10k-images-idx3-ubyte", 7840016,
                     "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
            FileSpec("t10k-labels-idx1-ubyte", 10008,
                     "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
        ),
    },
    counts={"train": 60000, "test": 10000},
    # Zalando's own bucket (torchvision's mirror), then the copy Keras downloads from.
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
             "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"),
    torchvision_dir="FashionMNIST",
    system_dirs=("/usr/share/datasets/fashion-mnist",),
)

REGISTRY: dict[str, DatasetSpec] = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}
_ALIASES = {"fashion": "fashion-mnist", "fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist"}

# sha256 -> (dataset, split, role), to say which file a mismatching one actually is.
KNOWN_DIGESTS: dict[str, tuple[str, str, str]] = {
    f.sha256: (spec.name, split, role)
    for spec in REGISTRY.values()
    for split, pair in spec.files.items()
    for role, f in zip(ROLES, pair, strict=True)
}


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return list(REGISTRY)


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for ``name`` (case-insensitive; "fashion" and "fashion_mnist" also work)."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in REGISTRY:
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(REGISTRY)}")
    return REGISTRY[key]


def _check_split(spec: DatasetSpec, split: str) -> str:
    if split not in spec.files:
        raise ConfigError(f"unknown split {split!r} for {spec.name}; choose one of: {', '.join(spec.files)}")
    return split


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/digitnet`` (when set to an absolute path), else ``~/.cache/digitnet``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "digitnet"


@dataclass(frozen=True)
class Location:
    """A folder that is searched, and why (shown by ``digitnet data info``)."""

    path: Path
    origin: str  # "data_dir", "DIGITNET_DATA", "cache" or "system"


def search_locations(spec: DatasetSpec, data_dir: str | os.PathLike | None = None) -> list[Location]:
    """The folders searched for ``spec``'s files, in lookup order.

    Raises DataError if ``data_dir`` is given but is not an existing directory.
    """
    places: list[Location] = []
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            what = "is not a directory" if root.exists() else "does not exist"
            raise DataError(f"data directory {root} {what}")
        places += [Location(root / spec.name, "data_dir"), Location(root, "data_dir"),
                   Location(root / spec.torchvision_dir / "raw", "data_dir")]
    env = os.environ.get(DATA_ENV)
    if env:
        places.append(Location(Path(env).expanduser() / spec.name, DATA_ENV))
    places.append(Location(cache_root() / spec.name, "cache"))
    places += [Location(Path(p), "system") for p in spec.system_dirs]
    return places


def download_target(spec: DatasetSpec, data_dir: str | os.PathLike | None = None) -> Location:
    """Where downloads go: ``data_dir/<name>`` if a data_dir is given, else the user cache."""
    if data_dir is not None:
        return Location(Path(data_dir).expanduser() / spec.name, "data_dir")
    return Location(cache_root() / spec.name, "cache")


def _find_file(folder: Path, file: FileSpec) -> Path | None:
    for candidate in file.candidates():
        path = folder / candidate
        if path.is_file():
            return path
    return None


@dataclass
class SplitFiles:
    """The image and label files of one split, and the location they were found in."""

    images: Path
    labels: Path
    location: Location


def find_split(spec: DatasetSpec, split: str, data_dir: str | os.PathLike | None = None) -> SplitFiles | None:
    """The first searched folder holding both files of ``split``, or None."""
    images_spec, labels_spec = spec.files[_check_split(spec, split)]
    for location in search_locations(spec, data_dir):
        images = _find_file(location.path, images_spec)
        labels = _find_file(location.path, labels_spec) if images else None
        if images and labels:
            return SplitFiles(images, labels, location)
    return None


def _mismatch_message(path: Path, file: FileSpec, spec: DatasetSpec, got: str) -> str:
    known = KNOWN_DIGESTS.get(got)
    actually = ""
    if known and known[0] != spec.name:
        actually = f" (it is the {REGISTRY[known[0]].title} file)"
    elif known:
        actually = f" (it is the {known[1]} {known[2]} file)"
    return (f"{path}: checksum mismatch: the sha256 of its contents is {got}, the published {spec.title} "
            f"{file.stem} has {file.sha256}{actually}; the file is corrupt or not the official one. "
            "Delete it and run 'digitnet data download'")


def _read_split(spec: DatasetSpec, split: str, files: SplitFiles, verify: bool
                ) -> tuple[np.ndarray, np.ndarray]:
    """Read, check shapes, and (if ``verify``) checksum one split. Raises DataError."""
    from digitnet.data.idx import read_idx, read_idx_with_digest

    arrays = []
    for path, file in zip((files.images, files.labels), spec.files[split], strict=True):
        if verify:
            array, digest = read_idx_with_digest(path)
            if digest != file.sha256:
                raise DataError(_mismatch_message(path, file, spec, digest))
        else:
            array = read_idx(path)
        arrays.append(array)
    images, labels = arrays
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{files.images}: expected uint8 images [N, H, W], got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8 or len(labels) != len(images):
        raise DataError(f"{files.labels}: expected {len(images)} uint8 labels, got {labels.dtype} "
                        f"{labels.shape}")
    return images, labels


def _not_found(spec: DatasetSpec, split: str, data_dir: str | os.PathLike | None) -> DataError:
    images, labels = spec.files[split]
    where = ", ".join(str(loc.path) for loc in search_locations(spec, data_dir))
    return DataError(f"{spec.title} {split} files ({images.gz_name}, {labels.gz_name}) not found in: "
                     f"{where}. Run 'digitnet data download --dataset {spec.name}', or set {DATA_ENV} "
                     f"to a folder holding {spec.name}/")


def load_dataset(name: str = "mnist", split: str = "train", data_dir: str | os.PathLike | None = None,
                 download: bool = True, *, verify: bool = True, mirrors: list[str] | str | None = None,
                 progress: bool | None = None) -> Dataset:
    """Load one split of a registered dataset.

    Args:
        name: "mnist" or "fashion-mnist".
        split: "train" (60,000 images) or "test" (10,000).
        data_dir: an extra folder searched first, and where downloads go (see the module docstring).
        download: fetch missing files from the mirrors; if False, a missing file is a DataError.
        verify: check the sha256 of every file's decompressed bytes (cheap; see module docstring).
        mirrors: base URLs to download from instead of the built-in ones (or ``$DIGITNET_MIRRORS``).
        progress: show a download progress bar; ``None`` = only if stderr is a terminal.

    Returns:
        Dataset with images uint8 ``[N, 28, 28]``, labels uint8 ``[N]``, the dataset's class names,
        name ``"<dataset>/<split>"`` and the file paths as ``source``.

    Raises:
        ConfigError: unknown dataset or split.
        DataError / DownloadError: files missing (and not downloadable), corrupt, or failing their
            checksum.
    """
    spec = get_spec(name)
    _check_split(spec, split)
    files = find_split(spec, split, data_dir)
    if files is None:
        if not download:
            raise _not_found(spec, split, data_dir)
        download_dataset(spec.name, data_dir=data_dir, splits=[split], mirrors=mirrors, progress=progress)
        files = find_split(spec, split, data_dir)
        if files is None:  # pragma: no cover - download_dataset raises instead
            raise _not_found(spec, split, data_dir)
    try:
        images, labels = _read_split(spec, split, files, verify)
    except DataError:
        # Our own cache is ours to repair: fetch the split again. Anything else is the user's file.
        if files.location.origin != "cache" or not download:
            raise
        download_dataset(spec.name, splits=[split], mirrors=mirrors, progress=progress)
        files = find_split(spec, split, data_dir)
        assert files is not None
        images, labels = _read_split(spec, split, files, verify)
    return Dataset(images=images, labels=labels, classes=list(spec.classes), name=f"{spec.name}/{split}",
                   source=f"{files.images}, {files.labels}")


def download_dataset(name: str = "mnist", data_dir: str | os.PathLike | None = None,
                     splits: list[str] | tuple[str, ...] = SPLITS, *, force: bool = False,
                     mirrors: list[str] | str | None = None, progress: bool | None = None,
                     timeout: float | None = None) -> Path:
    """Make sure the files of ``splits`` are in the download folder, fetching what is missing.

    The folder is ``data_dir/<name>`` if ``data_dir`` is given, else the user cache. Files already
    there are checksummed and kept if they are right. A wrong file in the cache is replaced; a wrong
    file in a folder of the user's is only replaced with ``force=True`` (else DataError).

    Returns:
        The download folder.
    """
    from digitnet.data.download import DEFAULT_TIMEOUT, download_file, resolve_mirrors
    from digitnet.data.idx import content_sha256

    spec = get_spec(name)
    target = download_target(spec, data_dir)
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise DataError(f"data directory {Path(data_dir).expanduser()} does not exist")
    urls = resolve_mirrors(spec.mirrors, spec.name, mirrors)
    for split in splits:
        for file in spec.files[_check_split(spec, split)]:
            existing = _find_file(target.path, file)
            if existing is not None:
                try:
                    ok = content_sha256(existing) == file.sha256
                except DataError:
                    ok = False
                if ok:
                    continue
                if target.origin != "cache" and not force:
                    raise DataError(f"{existing} is corrupt or not the official {spec.title} file "
                                    "(checksum mismatch); delete it or use --force to replace it")
                for candidate in file.candidates():  # remove every spelling, or it would shadow the new one
                    (target.path / candidate).unlink(missing_ok=True)
            download_file(file.gz_name, file.sha256, target.path, urls,
                          timeout=DEFAULT_TIMEOUT if timeout is None else timeout, progress=progress,
                          hint=f"place the {spec.title} files (.gz or uncompressed) in {target.path}, or set "
                               f"{DATA_ENV} to a folder holding {spec.name}/, or set DIGITNET_MIRRORS to a "
                               "mirror you can reach")
    return target.path


def dataset_info(name: str = "mnist", data_dir: str | os.PathLike | None = None) -> dict:
    """Where a dataset's files are, how many samples of each class, and whether checksums match.

    Never downloads. Returns a JSON-able dict::

        {"dataset": "mnist", "title": "MNIST", "classes": [...],
         "searched": [{"path": ..., "origin": ..., "exists": bool}, ...],
         "download_target": path,
         "splits": {"train": {"found": bool, "folder": path|None, "origin": str|None,
                              "count": int|None, "expected_count": 60000,
                              "class_counts": {"0": 5923, ...}|None,
                              "files": [{"role": "images", "path": ..., "sha256": ...,
                                         "expected_sha256": ..., "checksum": "OK"|"FAILED"|"missing"}],
                              "error": str|None}, "test": {...}},
         "ok": bool}          # every split found, readable and with matching checksums
    """
    from digitnet.data.idx import read_idx_with_digest

    spec = get_spec(name)
    locations = search_locations(spec, data_dir)
    info: dict = {
        "dataset": spec.name,
        "title": spec.title,
        "classes": list(spec.classes),
        "searched": [{"path": str(loc.path), "origin": loc.origin, "exists": loc.path.is_dir()}
                     for loc in locations],
        "download_target": str(download_target(spec, data_dir).path),
        "splits": {},
    }
    all_ok = True
    for split in spec.files:
        entry: dict = {"found": False, "folder": None, "origin": None, "count": None,
                       "expected_count": spec.counts[split], "class_counts": None, "files": [], "error": None}
        info["splits"][split] = entry
        files = find_split(spec, split, data_dir)
        if files is None:
            entry["error"] = str(_not_found(spec, split, data_dir))
            entry["files"] = [{"role": role, "path": None, "sha256": None, "expected_sha256": f.sha256,
                               "checksum": "missing"}
                              for role, f in zip(ROLES, spec.files[split], strict=True)]
            all_ok = False
            continue
        entry.update(found=True, folder=str(files.location.path), origin=files.location.origin)
        arrays = []
        for role, path, file in zip(ROLES, (files.images, files.labels), spec.files[split], strict=True):
            record = {"role": role, "path": str(path), "sha256": None, "expected_sha256": file.sha256,
                      "checksum": "FAILED"}
            entry["files"].append(record)
            try:
                array, digest = read_idx_with_digest(path)
            except DataError as exc:
                entry["error"] = str(exc)
                all_ok = False
                continue
            record["sha256"] = digest
            if digest == file.sha256:
                record["checksum"] = "OK"
            else:
                all_ok = False
                entry["error"] = _mismatch_message(path, file, spec, digest)
            arrays.append(array)
        if len(arrays) == 2:
            images, labels = arrays
            entry["count"] = int(len(images))
            n_classes = len(spec.classes)
            if labels.ndim == 1 and len(labels) == len(images) and labels.size and labels.max() < n_classes:
                counts = np.bincount(labels, minlength=len(spec.classes))
                entry["class_counts"] = {cls: int(c) for cls, c in zip(spec.classes, counts, strict=True)}
            elif entry["error"] is None:
                entry["error"] = f"{files.labels}: labels do not match the images"
                all_ok = False
    info["ok"] = all_ok
    return info
