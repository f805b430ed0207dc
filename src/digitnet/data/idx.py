"""Read and write IDX files, the format MNIST and Fashion-MNIST are published in.

An IDX file is a tiny header followed by the raw array, big-endian::

    byte 0-1   0x00 0x00                      (magic: always zero)
    byte 2     type code                      0x08 uint8, 0x09 int8, 0x0B int16,
                                              0x0C int32, 0x0D float32, 0x0E float64
    byte 3     number of dimensions  ndim
    then       ndim sizes, each a big-endian uint32
    then       prod(sizes) values of the type, big-endian, C order

``train-images-idx3-ubyte`` is type 0x08 with sizes (60000, 28, 28): 16 header bytes and
47,040,000 pixel bytes. Files are usually gzip-compressed; gzip is recognised by its magic bytes
``1f 8b``, never by the file name.

Reading is built for speed and a small footprint: the decompressed bytes go straight into one
preallocated NumPy buffer (no ``bytes`` object, no second copy), and the array returned for uint8
data is a view of that buffer. Because the header is parsed first, the reader knows exactly how many
bytes to expect: it stops on the first surplus byte (a gzip bomb cannot exhaust memory) and reports
truncated or over-long files with both byte counts.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from digitnet.atomic import atomic_open
from digitnet.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"

#: IDX type code -> the big-endian dtype of the values on disk.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_TYPE_NAMES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}
_CODE_OF = {(dt.kind, dt.itemsize): code for code, dt in IDX_DTYPES.items()}

# NumPy cannot make arrays of more dimensions than this (64 in NumPy 2, 32 in NumPy 1).
_MAX_NDIM = 32

# Compressed input is fed to zlib in slices of this size, and decompressed output is handed out in
# pieces of at most OUT_CHUNK bytes, so the temporaries stay small whatever the file size.
_IN_CHUNK = 1 << 20
_OUT_CHUNK = 1 << 22

# Deflate cannot expand data by more than about 1032:1, so a gzip file of c bytes holds at most
# ~1032 * c decompressed bytes. A header that claims more is wrong, and we say so before allocating.
_MAX_DEFLATE_RATIO = 1032


class _GzipTruncated(Exception):
    """The gzip stream ended before its end-of-stream marker (internal; becomes a DataError)."""


class _Inflater:
    """A read-only binary stream over the decompressed contents of gzip bytes.

    Handles concatenated gzip members (valid gzip) and zero padding after the last member.
    ``produced`` counts the decompressed bytes handed out so far.
    """

    def __init__(self, compressed: bytes | memoryview, name: str) -> None:
        self._src = memoryview(compressed)
        self._pos = 0
        self._name = name
        self._inflate = zlib.decompressobj(wbits=31)  # 31 = gzip header and trailer, 32 KiB window
        self._pending = memoryview(b"")
        self._done = False
        self.produced = 0

    def _more(self) -> bytes:
        """The next piece of decompressed output, or ``b""`` at the true end of the data."""
        while not self._done:
            if self._inflate.eof:
                # One gzip member is complete (and its CRC checked by zlib). Another may follow.
                self._pos -= len(self._inflate.unused_data)
                rest = bytes(self._src[self._pos:]).lstrip(b"\0")  # gzip allows zero padding
                if not rest:
                    self._done = True
                    break
                if rest[:2] != GZIP_MAGIC:
                    raise DataError(f"{self._name}: unexpected bytes after the end of the gzip data "
                                    "(corrupt file?)")
                self._pos = len(self._src) - len(rest)
                self._inflate = zlib.decompressobj(wbits=31)
            tail = self._inflate.unconsumed_tail
            if tail:
                src: bytes | memoryview = tail
            elif self._pos < len(self._src):
                src = self._src[self._pos:self._pos + _IN_CHUNK]
                self._pos += len(src)
            else:
                raise _GzipTruncated()
            try:
                out = self._inflate.decompress(src, _OUT_CHUNK)
            except zlib.error as exc:
                raise DataError(f"{self._name}: corrupt gzip data ({exc}); delete the file and "
                                "get a fresh copy") from None
            if out:
                return out
        return b""

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at the end of the data)."""
        parts = []
        while n > 0:
            if not self._pending:
                self._pending = memoryview(self._more())
                if not self._pending:
                    break
            piece = self._pending[:n]
            self._pending = self._pending[len(piece):]
            parts.append(bytes(piece))
            n -= len(piece)
        data = b"".join(parts)
        self.produced += len(data)
        return data

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` as far as the data goes; return the number of bytes written."""
        filled = 0
        while filled < len(buffer):
            if not self._pending:
                self._pending = memoryview(self._more())
                if not self._pending:
                    break
            k = min(len(self._pending), len(buffer) - filled)
            buffer[filled:filled + k] = self._pending[:k]
            self._pending = self._pending[k:]
            filled += k
        self.produced += filled
        return filled

    def count_rest(self, cap: int) -> int:
        """Decompress (without keeping) what is left; count it, stopping once past ``cap``."""
        count = len(self._pending)
        self._pending = memoryview(b"")
        while count <= cap:
            piece = self._more()
            if not piece:
                break
            count += len(piece)
        return count


class _RawReader:
    """The same small interface as :class:`_Inflater` over an uncompressed binary file object."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self._handle = handle
        self.size = size
        self.produced = 0

    def read(self, n: int) -> bytes:
        data = self._handle.read(n)
        self.produced += len(data)
        return data

    def readinto(self, buffer: memoryview) -> int:
        filled = 0
        while filled < len(buffer):
            n = self._handle.readinto(buffer[filled:])
            if not n:
                break
            filled += n
        self.produced += filled
        return filled

    def count_rest(self, cap: int) -> int:
        return max(self.size - self.produced, 0)


def _read_all(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise _open_error(path, exc) from None


def _open_error(path: Path, exc: OSError) -> DataError:
    if isinstance(exc, FileNotFoundError):
        return DataError(f"{path}: file not found")
    if isinstance(exc, IsADirectoryError):
        return DataError(f"{path}: is a directory, expected a file")
    if isinstance(exc, PermissionError):
        return DataError(f"{path}: permission denied")
    return DataError(f"cannot read {path}: {exc.strerror or exc}")


def is_gzip(path: str | os.PathLike) -> bool:
    """True if the file starts with the gzip magic bytes ``1f 8b`` (whatever its name)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return handle.read(2) == GZIP_MAGIC
    except OSError as exc:
        raise _open_error(path, exc) from None


def open_decompressed(path: str | os.PathLike) -> BinaryIO:
    """A binary file object over the contents of ``path``, gunzipped on the fly if it is gzip.

    For streaming readers (CSV); ``read_idx`` has its own faster path. The caller closes it.
    """
    path = Path(path)
    try:
        handle = open(path, "rb")  # the caller closes it
    except OSError as exc:
        raise _open_error(path, exc) from None
    if handle.read(2) == GZIP_MAGIC:
        handle.seek(0)
        return gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[return-value]
    handle.seek(0)
    return handle


def peek_contents(path: str | os.PathLike, n: int = 4096) -> bytes:
    """The first ``n`` bytes of the (decompressed, if gzip) contents, for format sniffing."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(n + (1 << 16))
    except OSError as exc:
        raise _open_error(path, exc) from None
    if head[:2] != GZIP_MAGIC:
        return head[:n]
    try:
        # A prefix of the compressed bytes decompresses to a prefix of the contents.
        return zlib.decompressobj(wbits=31).decompress(head, n)
    except zlib.error as exc:
        raise DataError(f"{path}: corrupt gzip data ({exc})") from None


def content_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of the file's contents after gunzipping (of the bytes themselves if not gzip).

    Mirrors recompress the files (so .gz checksums differ), but the decompressed bytes are the
    published ones; this is what the dataset registry verifies. Raises DataError on corrupt gzip.
    """
    path = Path(path)
    digest = hashlib.sha256()
    if not is_gzip(path):
        try:
            with open(path, "rb") as handle:
                return hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError as exc:
            raise _open_error(path, exc) from None
    stream = _Inflater(_read_all(path), str(path))
    try:
        while piece := stream._more():
            digest.update(piece)
    except _GzipTruncated:
        raise _truncated_gzip(str(path)) from None
    return digest.hexdigest()


def _truncated_gzip(name: str) -> DataError:
    return DataError(f"{name}: truncated gzip file: the data ends before the gzip end-of-stream marker")


def _describe(dims: tuple[int, ...], code: int) -> str:
    return f"shape {dims} of {_TYPE_NAMES[code]}"


def _parse(stream: _Inflater | _RawReader, name: str, compressed_size: int | None,
           want_digest: bool) -> tuple[np.ndarray, str | None]:
    """Parse an IDX stream into (native-endian array, sha256 of all the bytes or None)."""
    kind = "decompressed " if compressed_size is not None else ""
    head = stream.read(4)
    if not head:
        raise DataError(f"{name}: file is empty")
    if len(head) < 4:
        raise DataError(f"{name}: too short to be an IDX file ({len(head)} bytes)")
    if head[0] != 0 or head[1] != 0:
        hint = ""
        if head[:2] == b"PK":
            hint = " (it looks like a zip/npz file)"
        elif all(32 <= b < 127 or b in (9, 10, 13) for b in head):
            hint = " (it looks like a text/CSV file)"
        raise DataError(f"{name}: not an IDX file: the first two bytes must be 00 00, found "
                        f"{head[:2].hex(' ')}{hint}")
    code, ndim = head[2], head[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X} {n}" for c, n in _TYPE_NAMES.items())
        raise DataError(f"{name}: unknown IDX type code 0x{code:02X} (known: {known})")
    if ndim == 0 or ndim > _MAX_NDIM:
        raise DataError(f"{name}: IDX header declares {ndim} dimensions (expected 1 to {_MAX_NDIM})")
    dims_bytes = stream.read(4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise DataError(f"{name}: truncated IDX header: {ndim} dimensions need {4 + 4 * ndim} "
                        f"{kind}bytes, the file has {4 + len(dims_bytes)}")
    dims = struct.unpack(f">{ndim}I", dims_bytes)
    dtype = IDX_DTYPES[code]
    if math.prod(d for d in dims if d) * dtype.itemsize >= 2**63:
        # NumPy cannot even describe such a shape (not even with a zero in it: an empty array)
        raise DataError(f"{name}: IDX header declares an impossible shape {dims}")
    header_len = 4 + 4 * ndim
    expected = header_len + math.prod(dims) * dtype.itemsize

    def size_error(actual: int, at_least: bool = False) -> DataError:
        what = "truncated" if actual < expected else "longer than its header says"
        amount = f"at least {actual:,}" if at_least else f"{actual:,}"
        return DataError(f"{name}: IDX data {what}: the header declares {_describe(dims, code)}, "
                         f"which is {expected:,} {kind}bytes, but the file holds {amount}")

    # Check the declared size against what the file can hold *before* allocating the buffer.
    if isinstance(stream, _RawReader) and stream.size != expected:
        raise size_error(stream.size)
    if compressed_size is not None and expected > _MAX_DEFLATE_RATIO * compressed_size + 1024:
        try:
            actual = header_len + stream.count_rest(expected)
        except _GzipTruncated:
            actual = stream.produced
        raise size_error(actual)

    buffer = np.empty(expected, dtype=np.uint8)
    buffer[:header_len] = np.frombuffer(head + dims_bytes, dtype=np.uint8)
    try:
        got = stream.readinto(memoryview(buffer)[header_len:])
    except _GzipTruncated:
        raise DataError(f"{name}: truncated gzip file: the data ends after {stream.produced:,} of the "
                        f"{expected:,} decompressed bytes the IDX header declares "
                        f"({_describe(dims, code)})") from None
    if got < expected - header_len:
        raise size_error(header_len + got)
    try:
        extra = stream.count_rest(expected)
    except _GzipTruncated:
        raise DataError(f"{name}: truncated gzip file: all {expected:,} bytes are there but the gzip "
                        "trailer (CRC and length) is missing") from None
    if extra:
        raise size_error(expected + extra, at_least=extra > expected)

    digest = hashlib.sha256(buffer).hexdigest() if want_digest else None
    array = buffer[header_len:].view(dtype).reshape(dims)
    if dtype.itemsize > 1:
        # Big-endian on disk; hand out native byte order so every NumPy/BLAS path is fast.
        array = array.astype(dtype.newbyteorder("="))
    else:
        array = array.view(dtype.newbyteorder("="))
    return array, digest


def _read(path: str | os.PathLike, want_digest: bool) -> tuple[np.ndarray, str | None]:
    path = Path(path)
    name = str(path)
    try:
        handle = open(path, "rb")  # closed by the with below
    except OSError as exc:
        raise _open_error(path, exc) from None
    with handle:
        try:
            magic = handle.read(2)
            if magic == GZIP_MAGIC:
                compressed = magic + handle.read()
                return _parse(_Inflater(compressed, name), name, len(compressed), want_digest)
            handle.seek(0)
            size = os.fstat(handle.fileno()).st_size
            return _parse(_RawReader(handle, size), name, None, want_digest)
        except OSError as exc:
            raise _open_error(path, exc) from None
        except _GzipTruncated:
            raise _truncated_gzip(name) from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a native-endian, writable array.

    Returns:
        ndarray with the shape and dtype the header declares, e.g. uint8 ``[60000, 28, 28]`` for
        ``train-images-idx3-ubyte`` and uint8 ``[60000]`` for ``train-labels-idx1-ubyte``.

    Raises:
        DataError: missing or unreadable file, corrupt or truncated gzip, bad magic, unknown type
            code, bad number of dimensions, or data shorter/longer than the header declares.
    """
    return _read(path, want_digest=False)[0]


def read_idx_with_digest(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Like :func:`read_idx`, plus the hex sha256 of the decompressed file contents.

    The digest is taken over the buffer already in memory, so it costs one pass of SHA-256 over
    the data and no extra I/O.
    """
    array, digest = _read(path, want_digest=True)
    assert digest is not None
    return array, digest


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes (gzip-compressed or raw) already in memory; same checks as :func:`read_idx`."""
    if data[:2] == GZIP_MAGIC:
        try:
            return _parse(_Inflater(data, name), name, len(data), want_digest=False)[0]
        except _GzipTruncated:
            raise _truncated_gzip(name) from None
    return _parse(_RawReader(io.BytesIO(data), len(data)), name, None, want_digest=False)[0]


def _header(array: np.ndarray, name: str) -> bytes:
    dtype = array.dtype
    code = _CODE_OF.get((dtype.kind, dtype.itemsize))
    if code is None:
        known = ", ".join(_TYPE_NAMES.values())
        raise DataError(f"{name}: IDX cannot store dtype {dtype} (it supports {known})")
    if array.ndim == 0 or array.ndim > 255:
        raise DataError(f"{name}: IDX stores arrays of 1 to 255 dimensions, got {array.ndim}")
    if any(d > 0xFFFFFFFF for d in array.shape):
        raise DataError(f"{name}: dimension too large for IDX (max 2**32 - 1): {array.shape}")
    return bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` as uncompressed IDX bytes (header + big-endian data)."""
    array = np.asarray(array)
    header = _header(array, "idx_bytes")
    return header + np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file, atomically (a reader never sees a half-written file).

    Args:
        path: target file.
        array: any of uint8, int8, int16, int32, float32, float64 (either byte order), 1-255 dims.
        compress: gzip the file; ``None`` means "if the name ends in .gz". The gzip header carries
            no name or time stamp, so the same array always gives the same bytes.
    """
    path = Path(path)
    array = np.asarray(array)
    header = _header(array, str(path))
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">"))
    if compress is None:
        compress = path.name.lower().endswith(".gz")
    with atomic_open(path, "wb") as handle:
        if compress:
            with gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0, compresslevel=6) as gz:
                gz.write(header)
                gz.write(memoryview(data.reshape(-1).view(np.uint8)))
        else:
            handle.write(header)
            handle.write(memoryview(data.reshape(-1).view(np.uint8)))
