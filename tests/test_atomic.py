"""Atomic writes (digitnet.atomic): all or nothing, old file intact, no temporary files left behind.

Tests run as root in CI, where a chmod'ed directory does not stop writes; so failures are made
by raising the OSError a full or read-only disk gives from the system call that would fail, and
for real by a process file-size limit (RLIMIT_FSIZE: writes past it fail with EFBIG, root too).
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import tempfile

import pytest

from digitnet import atomic
from digitnet.atomic import WriteError, atomic_open, write_bytes, write_json, write_text
from digitnet.errors import DigitnetError

OLD = b"the old contents\n"


def names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def old_file(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(OLD)
    return path


def test_writes_replace_the_file(tmp_path, old_file):
    write_bytes(old_file, b"\x00\x01new")
    assert old_file.read_bytes() == b"\x00\x01new"
    write_text(tmp_path / "t.txt", "zwölf\n")
    assert (tmp_path / "t.txt").read_bytes() == "zwölf\n".encode()
    write_json(tmp_path / "j.json", {"a": [1, 2.5, None], "b": "ü"})
    assert json.loads((tmp_path / "j.json").read_text(encoding="utf-8")) == {"a": [1, 2.5, None], "b": "ü"}
    assert names(tmp_path) == ["j.json", "out.bin", "t.txt"]


def test_final_file_gets_normal_permissions(tmp_path):
    """mkstemp makes 0600 files; the result must look like a plain open() made it (0666 & ~umask)."""
    umask = os.umask(0o027)
    os.umask(umask)
    write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~umask


def test_nothing_visible_until_the_block_ends(tmp_path, old_file):
    with atomic_open(old_file, "wb") as handle:
        handle.write(b"half")
        assert old_file.read_bytes() == OLD  # readers still see the old file
        temps = [n for n in names(tmp_path) if n != "out.bin"]
        assert len(temps) == 1 and temps[0].startswith(".out.bin.") and temps[0].endswith(".tmp")
    assert old_file.read_bytes() == b"half"
    assert names(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("error", [ValueError("bug in the caller"), KeyboardInterrupt()],
                         ids=["exception", "ctrl-c"])
def test_exception_inside_the_block_keeps_the_old_file(tmp_path, old_file, error):
    with pytest.raises(type(error)):
        with atomic_open(old_file, "wb") as handle:
            handle.write(b"partial")
            raise error
    assert old_file.read_bytes() == OLD
    assert names(tmp_path) == ["out.bin"]


@pytest.mark.parametrize(("code", "message"), [
    (errno.EROFS, "permission denied or read-only location"),
    (errno.EACCES, "permission denied or read-only location"),
    (errno.ENOSPC, "no space left on device (the previous file, if any, is unchanged)"),
    (errno.EDQUOT, "disk quota exceeded (the previous file, if any, is unchanged)"),
])
def test_cannot_create_the_temporary_file(tmp_path, old_file, monkeypatch, code, message):
    """A read-only or full directory: mkstemp fails; clear WriteError, old file untouched."""
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(WriteError) as info:
        write_bytes(old_file, b"new")
    assert str(info.value) == f"cannot write {old_file}: {message}"
    assert isinstance(info.value, DigitnetError) and info.value.exit_code == 2
    assert old_file.read_bytes() == OLD
    assert names(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("where", ["fsync", "replace", "chmod"])
def test_failure_after_writing_keeps_the_old_file(tmp_path, old_file, monkeypatch, where):
    """The disk fills up at fsync (delayed allocation), or the rename is refused."""
    def refuse(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, where, refuse)
    with pytest.raises(WriteError, match="no space left on device"):
        write_bytes(old_file, b"new contents")
    monkeypatch.undo()
    assert old_file.read_bytes() == OLD
    assert names(tmp_path) == ["out.bin"]


def test_write_error_inside_the_block(tmp_path, old_file):
    class FullDisk:
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError, match="no space left"):
        with atomic_open(old_file, "wb") as handle:
            handle.write(b"some")
            FullDisk().write(b"more")
    assert old_file.read_bytes() == OLD
    assert names(tmp_path) == ["out.bin"]


def test_missing_directory_and_file_as_directory(tmp_path):
    with pytest.raises(WriteError, match=f"directory {tmp_path / 'nope'} does not exist"):
        write_text(tmp_path / "nope" / "a.txt", "x")
    (tmp_path / "plain").write_text("I am a file")
    with pytest.raises(WriteError, match="plain is not a directory"):
        write_text(tmp_path / "plain" / "a.txt", "x")
    (tmp_path / "adir").mkdir()
    with pytest.raises(WriteError, match="cannot write"):
        write_text(tmp_path / "adir", "x")  # a directory where the file should go
    assert names(tmp_path) == ["adir", "plain"]
    assert (tmp_path / "plain").read_text() == "I am a file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions; covered by the "
                    "monkeypatched and RLIMIT_FSIZE tests")
def test_read_only_directory_for_real(tmp_path, old_file):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(WriteError, match="permission denied or read-only location"):
            write_bytes(old_file, b"new")
    finally:
        tmp_path.chmod(0o755)
    assert old_file.read_bytes() == OLD
    assert names(tmp_path) == ["out.bin"]


def _limit_file_size() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead


def test_real_write_failure_past_a_file_size_limit(tmp_path, old_file):
    """A real failing write() (EFBIG from RLIMIT_FSIZE, which binds root too), in a child process."""
    code = ("import sys\nfrom digitnet.atomic import write_bytes, WriteError\n"
            "try:\n    write_bytes(sys.argv[1], b'x' * 100_000)\n"
            "except WriteError as exc:\n    print(exc)\n    sys.exit(2)\n")
    result = subprocess.run([sys.executable, "-c", code, str(old_file)], capture_output=True, text=True,
                            preexec_fn=_limit_file_size, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stdout.strip() == (f"cannot write {old_file}: file too large (file system or process "
                                     "file-size limit) (the previous file, if any, is unchanged)")
    assert old_file.read_bytes() == OLD
    assert names(tmp_path) == ["out.bin"]


def test_describe_other_errors(tmp_path):
    exc = OSError(errno.EIO, "Input/output error")
    assert atomic._describe(exc, tmp_path / "f") == f"cannot write {tmp_path / 'f'}: Input/output error"
