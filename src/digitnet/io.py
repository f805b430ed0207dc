"""Model files: weights in safetensors, everything else as JSON in its metadata.

A model file is a plain `safetensors <https://github.com/huggingface/safetensors>`_ file:

    8 bytes   little-endian u64 N, the length of the JSON header
    N bytes   JSON header: {"__metadata__": {"digitnet": "<JSON>"}, "layers.0.weights": {dtype, shape,
              data_offsets}, ...}
    rest      the raw little-endian tensor bytes

The ``digitnet`` metadata entry holds the architecture (``Sequential.config()``), class names,
preprocessing, training configuration, metrics and the digitnet version. Loading rebuilds the
model from that architecture and copies the weights in. Nothing in the file is ever executed:
there is no pickle anywhere, and the header is validated (size, JSON, dtypes, shapes, offsets)
before any tensor is read, so a truncated or tampered file is refused with a clear
:class:`~digitnet.errors.ModelFileError` and no large allocation.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitnet import __version__
from digitnet.atomic import write_bytes
from digitnet.errors import ConfigError, ModelFileError

FORMAT = "digitnet.model"
FORMAT_VERSION = 1
#: A header longer than this is refused before it is read (ours are a few KB).
MAX_HEADER_BYTES = 16 * 1024 * 1024
#: An architecture with more layers than this is refused before any layer is built.
MAX_LAYERS = 1000
#: A layer with no tensors in the file (pooling, reshaping) may still name sizes up to this product.
_SMALL_LAYER_ELEMENTS = 1 << 16
#: Layer arguments that are not array sizes (left out when bounding what a layer would allocate).
_NON_SIZE_ARGUMENTS = frozenset({"type", "stride", "padding", "dilation", "rate", "alpha", "negative_slope",
                                 "eps", "momentum", "init"})
_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "U8": np.uint8, "I8": np.int8, "BOOL": np.bool_}
_DTYPE_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}
#: the dtypes a model's own tensors may have
MODEL_DTYPES = {"F32"}


@dataclass
class SavedFile:
    """What :func:`read_safetensors` returns: tensors by name and the decoded ``digitnet`` metadata."""

    tensors: dict[str, np.ndarray]
    metadata: dict[str, Any] = field(default_factory=dict)


def _encode(tensors: dict[str, np.ndarray], metadata: dict[str, Any]) -> bytes:
    """Serialise to safetensors bytes (written here so the layout is explicit and checked)."""
    header: dict[str, Any] = {"__metadata__": {"digitnet": json.dumps(metadata, separators=(",", ":"))}}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        dtype_name = _DTYPE_NAMES.get(array.dtype.newbyteorder("="))  # big-endian input is fine too
        if dtype_name is None:
            raise ConfigError(f"cannot save tensor {name} of dtype {array.dtype}")
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtype_name, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # align tensor data to 8 bytes
    return struct.pack("<Q", len(header_bytes)) + header_bytes + b"".join(blobs)


def write_safetensors(
    path: str | os.PathLike, tensors: dict[str, np.ndarray], metadata: dict[str, Any]
) -> None:
    """Atomically write ``tensors`` with ``metadata`` (JSON-serialisable) to ``path``."""
    write_bytes(path, _encode(tensors, metadata))


def read_safetensors(path: str | os.PathLike, what: str = "model file") -> SavedFile:
    """Read and validate a safetensors file; raises ModelFileError on anything malformed.

    The 8-byte length and the JSON header are checked against the file size before anything else
    is read, and every tensor's dtype, shape and byte range before the data is read, so memory use
    stays within about twice the file size whatever the header claims.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        handle = open(path, "rb")
    except FileNotFoundError:
        raise ModelFileError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path} is a directory, not a {what}") from None
    except OSError as exc:
        raise ModelFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. a NUL byte in the name
        raise ModelFileError(f"cannot read {what} {path!r}: {exc}") from None
    with handle:
        prefix = handle.read(8)
        if size < 8 or len(prefix) < 8:
            raise ModelFileError(f"{path} is not a {what}: only {size} bytes (truncated?)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > MAX_HEADER_BYTES or header_len > size - 8:
            raise ModelFileError(f"{path} is not a valid {what}: its header claims {header_len:,} bytes "
                                 f"but the file has {size:,} (truncated or not a safetensors file)")
        raw_header = handle.read(header_len)
        header = _parse_json(raw_header, f"{path} is not a valid {what}: its header is not JSON")
        if not isinstance(header, dict):
            raise ModelFileError(f"{path} is not a valid {what}: header is not a JSON object")
        data_len = size - 8 - header_len
        meta_raw = header.pop("__metadata__", {}) or {}
        entries = _validated_entries(path, header, data_len, what)
        data = handle.read(data_len)
    if len(data) != data_len:
        raise ModelFileError(f"{path}: file changed while reading")
    tensors = {}
    for name, (dtype, shape, start, _stop) in entries.items():
        little_endian = np.dtype(dtype).newbyteorder("<")
        flat = np.frombuffer(data, dtype=little_endian, count=math.prod(shape), offset=start)
        tensors[name] = flat.reshape(shape).astype(dtype)  # a native-order copy the caller owns
    metadata: dict[str, Any] = {}
    if isinstance(meta_raw, dict) and "digitnet" in meta_raw:
        if not isinstance(meta_raw["digitnet"], str):
            raise ModelFileError(f"{path}: the digitnet metadata is not a JSON string")
        metadata = _parse_json(meta_raw["digitnet"], f"{path}: the digitnet metadata is not valid JSON")
        if not isinstance(metadata, dict):
            raise ModelFileError(f"{path}: the digitnet metadata is not a JSON object")
    return SavedFile(tensors=tensors, metadata=metadata)


def _parse_json(raw: bytes | str, message: str) -> Any:
    """``json.loads`` that turns every way untrusted text can fail into ModelFileError(message)."""
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # ValueError: bad JSON, or an integer of more than 4300 digits;
        # RecursionError: brackets nested thousands deep
        raise ModelFileError(message) from None


def _validated_entries(path: Path, header: dict, data_len: int, what: str) -> dict:
    entries = {}
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ModelFileError(f"{path} is not a valid {what}: bad entry for tensor {name!r}")
        dtype = _DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
        shape = info["shape"]
        offsets = info["data_offsets"]
        if dtype is None:
            raise ModelFileError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']!r}")
        if (not isinstance(shape, list) or not all(_is_int(d) and 0 <= d < 2**31 for d in shape)
                or len(shape) > 32 or not isinstance(offsets, list) or len(offsets) != 2
                or not all(_is_int(o) for o in offsets)):
            raise ModelFileError(f"{path}: tensor {name!r} has a malformed shape or offsets")
        start, stop = offsets
        expected = math.prod(shape) * np.dtype(dtype).itemsize  # exact: Python ints do not overflow
        if not 0 <= start <= stop <= data_len or stop - start != expected:
            raise ModelFileError(f"{path}: tensor {name!r} claims bytes {start}..{stop} of {data_len} "
                                 f"(needs {expected}): truncated or tampered file")
        spans.append((start, stop))
        entries[name] = (dtype, tuple(shape), start, stop)
    spans.sort()
    for (_, a_stop), (b_start, _) in zip(spans, spans[1:], strict=False):
        if b_start < a_stop:
            raise ModelFileError(f"{path}: tensors overlap: tampered file")
    return entries


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def model_metadata(model, *, classes: list[str], training: dict | None = None, metrics: dict | None = None,
                   dataset: str | None = None, extra: dict | None = None) -> dict[str, Any]:
    """The metadata dict stored in every model file."""
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "digitnet_version": __version__,
        "architecture": model.config(),
        "classes": list(classes),
        "preprocessing": {
            "input": "uint8 grayscale, white ink on black, 28x28 (MNIST convention)",
            "scale": "x / 255 as float32",
            "layout": "flat [B, 784]" if len(model.input_shape) == 1 else "NCHW [B, 1, 28, 28]",
        },
        "dataset": dataset,
        "training": training or {},
        "metrics": metrics or {},
    }
    if extra:
        meta.update(extra)
    return meta


def save_model(path: str | os.PathLike, model, *, classes: list[str] | None = None,
               training: dict | None = None, metrics: dict | None = None, dataset: str | None = None,
               extra_tensors: dict[str, np.ndarray] | None = None, extra_meta: dict | None = None) -> Path:
    """Atomically write ``model`` (a Sequential) and its metadata to ``path``; returns the path."""
    path = Path(path)
    classes = classes if classes is not None else [str(d) for d in range(10)]
    tensors = dict(model.state_dict())
    if extra_tensors:
        tensors.update(extra_tensors)
    meta = model_metadata(model, classes=classes, training=training, metrics=metrics, dataset=dataset,
                          extra=extra_meta)
    write_safetensors(path, tensors, meta)
    return path


@dataclass
class LoadedModel:
    """A model rebuilt from a file, with everything its metadata says."""

    model: Any  # digitnet.nn.Sequential
    classes: list[str]
    metadata: dict[str, Any]
    path: Path
    extra_tensors: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.metadata.get("metrics", {})

    @property
    def training(self) -> dict[str, Any]:
        return self.metadata.get("training", {})

    @property
    def dataset(self) -> str | None:
        return self.metadata.get("dataset")


def resolve_model_path(path: str | os.PathLike) -> Path:
    """A model file, or a run directory holding ``model.safetensors``."""
    path = Path(path)
    if path.is_dir():
        candidate = path / "model.safetensors"
        if not candidate.exists():
            raise ModelFileError(f"{path} is a directory without model.safetensors")
        return candidate
    return path


def load_model(path: str | os.PathLike, what: str = "model file", kernels: str | None = None) -> LoadedModel:
    """Rebuild a model from a file written by :func:`save_model` (or a run directory).

    ``kernels`` ("fast", "reference"; default ``$DIGITNET_KERNELS`` or "fast", see
    :func:`digitnet.kernels.resolve`) says whether the model computes with the tuned kernels or
    the reference layers; the numbers agree up to float32 rounding.

    Raises:
        ModelFileError: missing, truncated, not safetensors, not a digitnet model, architecture or
            tensors that do not fit, non-float32 weights, non-finite values.
    """
    from digitnet.kernels import resolve, speed_up
    from digitnet.nn.sequential import Sequential

    use_kernels = resolve(kernels) == "fast"
    path = resolve_model_path(path)
    saved = read_safetensors(path, what)
    meta = saved.metadata
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path} is a safetensors file but not a digitnet model (no digitnet metadata)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{path}: model format version {meta.get('format_version')!r} is not supported "
                             f"by digitnet {__version__} (expected {FORMAT_VERSION})")
    classes = meta.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ModelFileError(f"{path}: metadata has no valid class list")
    architecture = meta.get("architecture")
    _check_architecture_size(path, architecture, saved.tensors)
    try:
        model = Sequential.from_config(architecture)
    except (ConfigError, TypeError, ValueError, OverflowError, KeyError, AttributeError) as exc:
        # hand-edited metadata can reach a layer constructor with any JSON value
        raise ModelFileError(f"{path}: bad architecture in metadata: {exc}") from None
    own = model.state_dict()
    weights = {k: v for k, v in saved.tensors.items() if k.startswith("layers.")}
    extra = {k: v for k, v in saved.tensors.items() if not k.startswith("layers.")}
    for name, array in weights.items():
        if name in own and array.dtype != own[name].dtype:
            raise ModelFileError(f"{path}: tensor {name} is {array.dtype}, expected {own[name].dtype}")
        if not np.all(np.isfinite(array)):
            raise ModelFileError(f"{path}: tensor {name} holds NaN or infinite values")
    try:
        model.load_state_dict(weights)
    except ConfigError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    out_dim = model.output_shapes()[-1]
    if out_dim != (len(classes),):
        outputs = "x".join(str(d) for d in out_dim)
        raise ModelFileError(f"{path}: the model has {outputs} outputs but {len(classes)} class names")
    if use_kernels:
        model = speed_up(model)[0]
    return LoadedModel(model=model, classes=classes, metadata=meta, path=path, extra_tensors=extra)


def _check_architecture_size(path: Path, architecture: Any, tensors: dict[str, np.ndarray]) -> None:
    """Refuse an architecture that would allocate far more than the file's tensors hold.

    Building a model allocates its weights, so metadata claiming ``Dense(784, 10**9)`` beside a few
    KB of tensors must be refused *before* the model is built. For layer ``i`` the product of its
    size arguments (``in_features * out_features``; channels and kernel sizes) may not exceed the
    number of values the file holds for ``layers.i.*`` (plus a little for layers without tensors).
    A genuine file always passes: a Dense layer's weights alone hold ``in_features * out_features``.
    """
    if not isinstance(architecture, dict) or not isinstance(architecture.get("layers"), list):
        return  # Sequential.from_config explains what is wrong
    layers = architecture["layers"]
    if len(layers) > MAX_LAYERS:
        raise ModelFileError(f"{path}: the architecture lists {len(layers):,} layers (at most {MAX_LAYERS:,} "
                             "are accepted): tampered file?")
    held: dict[str, int] = {}
    for name, array in tensors.items():
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "layers":
            held[parts[1]] = held.get(parts[1], 0) + int(array.size)
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            continue
        available = held.get(str(i), 0) + _SMALL_LAYER_ELEMENTS
        claimed: int | float = 1
        sizes = (n for key, value in layer.items() if key not in _NON_SIZE_ARGUMENTS for n in _numbers(value))
        for number in sizes:
            claimed *= max(number, 1)
            if claimed > available:  # stop early: the product of huge numbers only grows
                raise ModelFileError(
                    f"{path}: layer {i} of the architecture ({str(layer.get('type'))[:40]!r}) needs more "
                    f"than {available:,} values but the file holds {held.get(str(i), 0):,} for it: "
                    "the metadata does not belong to these weights (tampered file?)")


def _numbers(value: Any, depth: int = 0) -> list[int | float]:
    """The numbers in a JSON value (numbers, numeric strings, lists of them), for size bounds."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]  # a Python int of any size (float() of a 400-digit int would overflow)
    if isinstance(value, float):
        return [value if math.isfinite(value) else math.inf]
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return []
        return [number if math.isfinite(number) else math.inf]
    if isinstance(value, list) and depth < 4:
        return [n for item in value for n in _numbers(item, depth + 1)]
    return []
