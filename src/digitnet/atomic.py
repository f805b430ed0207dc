"""Write files atomically: to a temporary file in the same directory, then rename.

A reader never sees a half-written file, and a failed write (full disk, read-only directory,
Ctrl-C) leaves the previous file intact. ``os.replace`` is atomic on POSIX when source and
target are on the same filesystem, which is why the temporary file lives beside the target.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from digitnet.errors import DigitnetError


class WriteError(DigitnetError):
    """A file could not be written (read-only directory, full disk, ...); the old file is intact."""


@functools.cache
def _default_mode() -> int:
    # mkstemp creates 0600 files; give the final file the permissions a plain open() would.
    # Read once: os.umask can only be read by setting it, which is not thread-safe.
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
         errno.EFBIG: "file too large (file system or process file-size limit)"}


def _describe(exc: OSError, path: Path) -> str:
    if exc.errno in _FULL:
        return f"cannot write {path}: {_FULL[exc.errno]} (the previous file, if any, is unchanged)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path}: permission denied or read-only location"
    if exc.errno == errno.ENOENT:
        return f"cannot write {path}: directory {path.parent} does not exist"
    if exc.errno == errno.ENOTDIR:
        return f"cannot write {path}: {path.parent} is not a directory"
    return f"cannot write {path}: {exc.strerror or exc}"


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success rename it over ``path``.

    Usage::

        with atomic_open("model.safetensors", "wb") as f:
            f.write(data)

    On any exception the temporary file is removed and ``path`` is left as it was.
    OS errors are re-raised as :class:`WriteError` with a clear message.
    """
    path = Path(path)
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    except OSError as exc:
        raise WriteError(_describe(exc, path)) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WriteError(_describe(exc, path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically replace ``path`` with ``text`` (UTF-8)."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def read_json_object(path: str | os.PathLike, missing: str) -> dict:
    """The JSON object in ``path``; ConfigError with ``missing`` if there is no such file, or if it is
    not valid JSON or not an object."""
    from digitnet.errors import ConfigError

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(missing) from None
    except json.JSONDecodeError:
        raise ConfigError(f"{path} is not valid JSON") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return data


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
