"""Download dataset files from public mirrors, verified before they are used.

One file is fetched like this::

    for each mirror in turn:
        stream  <mirror>/<file>  ->  a temporary file in the target folder   (tqdm bar on stderr)
        gunzip it and take the sha256 of the contents
        equal to the published value?  rename it into place, done
        otherwise (HTTP error, refused connection, timeout, truncated or corrupt gzip, checksum
        mismatch): delete the temporary file, remember why, try the next mirror
    no mirror worked  ->  DownloadError naming every mirror and why it failed

The checksum is taken of the *decompressed* bytes because mirrors recompress the files (their .gz
bytes differ) while the contents are the published ones. The rename is atomic, so a half-finished or
wrong download is never seen under the real name, and a download interrupted by Ctrl-C leaves no
temporary file behind. Only the standard library (urllib) is used; every socket operation has a
timeout. File URLs (``file:///mnt/usb/mnist/``) work too, which helps on offline machines.

Mirrors can be replaced for tests or offline setups with the ``mirrors=`` argument or the
``DIGITNET_MIRRORS`` environment variable: base URLs separated by spaces or commas, tried in order;
``{name}`` in a URL is replaced by the dataset name (``mnist``, ``fashion-mnist``).
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from digitnet import __version__
from digitnet.errors import DataError, DownloadError

log = logging.getLogger(__name__)

MIRRORS_ENV = "DIGITNET_MIRRORS"
DEFAULT_TIMEOUT = 30.0  # seconds, for connecting and for each read on the socket
_BLOCK = 1 << 16


def resolve_mirrors(defaults: Sequence[str], name: str = "", override: Sequence[str] | str | None = None
                    ) -> list[str]:
    """The base URLs to try, in order: ``override`` if given, else ``$DIGITNET_MIRRORS``, else defaults.

    A string is split on whitespace and commas. ``{name}`` is replaced by the dataset name.
    """
    chosen: Sequence[str] | str | None = override
    if chosen is None:
        chosen = os.environ.get(MIRRORS_ENV) or None
    if chosen is None:
        chosen = defaults
    if isinstance(chosen, str):
        chosen = [part for part in re.split(r"[\s,]+", chosen) if part]
    urls = [url.replace("{name}", name) for url in chosen]
    if not urls:
        raise DownloadError("no download mirrors configured (check $DIGITNET_MIRRORS)")
    return urls


def _join(base: str, filename: str) -> str:
    return base.rstrip("/") + "/" + filename


def _show_progress(progress: bool | None) -> bool:
    if progress is None:
        return sys.stderr.isatty()
    return progress


def _fetch(url: str, handle, timeout: float, progress: bool, label: str) -> int:
    """Stream ``url`` into the open binary ``handle``; return the byte count.

    Raises OSError, urllib.error.URLError, http.client.HTTPException or ValueError on failure,
    DataError if fewer bytes arrive than the server announced.
    """
    from tqdm import tqdm  # imported here: only downloads need it

    request = urllib.request.Request(url, headers={"User-Agent": f"digitnet/{__version__}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                  file=sys.stderr, disable=not progress, leave=False) as bar:
            while True:
                block = response.read(_BLOCK)
                if not block:
                    break
                handle.write(block)
                received += len(block)
                bar.update(len(block))
    if total is not None and received != total:
        raise DataError(f"truncated transfer: got {received:,} of {total:,} bytes")
    return received


def download_file(filename: str, sha256: str, dest_dir: str | os.PathLike, mirrors: Sequence[str], *,
                  timeout: float = DEFAULT_TIMEOUT, progress: bool | None = None,
                  hint: str | None = None) -> Path:
    """Download ``filename`` into ``dest_dir`` from the first mirror that serves the right bytes.

    Args:
        filename: e.g. ``"train-images-idx3-ubyte.gz"``; appended to each mirror's base URL.
        sha256: expected hex sha256 of the *decompressed* contents.
        dest_dir: created if missing; the file ends up as ``dest_dir / filename``.
        mirrors: base URLs tried in order (see :func:`resolve_mirrors`).
        timeout: seconds for connecting and for each socket read.
        progress: show a tqdm bar on stderr; ``None`` means "if stderr is a terminal".
        hint: what the user can do instead, ending the error message.

    Returns:
        The path of the verified file.

    Raises:
        DownloadError: no mirror delivered a file with the right checksum; the message lists the
            reason for every mirror.
        DataError: the target folder cannot be created or written (no point trying other mirrors).
    """
    from digitnet.data.idx import content_sha256

    dest_dir = Path(dest_dir)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the download folder {dest_dir}: {exc.strerror or exc}") from None
    target = dest_dir / filename
    show = _show_progress(progress)
    failures: list[str] = []

    def failed(url: str, reason: str) -> None:
        failures.append(f"{url}: {reason}")
        more = len(failures) < len(mirrors)
        note = f"could not download {url} ({reason})" + ("; trying the next mirror" if more else "")
        # The final error lists every reason, so a non-interactive run stays at one line on failure;
        # with a progress bar on screen the user also sees each mirror fail as it happens.
        log.info(note)
        if show:
            print(note, file=sys.stderr)

    for base in mirrors:
        url = _join(base, filename)
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=dest_dir)
        except OSError as exc:
            raise DataError(f"cannot write to {dest_dir}: {exc.strerror or exc}") from None
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                try:
                    _fetch(url, handle, timeout, show, filename)
                except (urllib.error.URLError, http.client.HTTPException, ValueError, DataError) as exc:
                    failed(url, _reason(exc))
                    continue
                except OSError as exc:  # timeouts, resets; but a local write error is fatal
                    if _is_local_write_error(exc):
                        raise DataError(f"cannot write {target}: {exc.strerror}") from None
                    failed(url, _reason(exc))
                    continue
                try:
                    handle.flush()
                    os.fsync(handle.fileno())
                except OSError as exc:  # the disk filled up with the last buffered bytes
                    raise DataError(f"cannot write {target}: {exc.strerror or exc}") from None
            try:
                got = content_sha256(tmp)
            except DataError as exc:  # corrupt or truncated gzip
                failed(url, str(exc).replace(str(tmp), "downloaded file"))
                continue
            if got != sha256:
                failed(url, f"checksum mismatch (sha256 of the contents {got}, expected {sha256})")
                continue
            try:
                os.replace(tmp, target)
            except OSError as exc:
                raise DataError(f"cannot write {target}: {exc.strerror or exc}") from None
            return target
        finally:
            tmp.unlink(missing_ok=True)
    if hint is None:
        hint = (f"place the file (or its uncompressed form) in {dest_dir}, or set {MIRRORS_ENV} to a "
                "mirror you can reach")
    raise DownloadError(f"could not download {filename} from any mirror: {'; '.join(failures)}; {hint}")


def _is_local_write_error(exc: OSError) -> bool:
    import errno

    return exc.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT)


def _reason(exc: BaseException) -> str:
    """A short human reason for a failed download."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return _reason(exc.reason) if isinstance(exc.reason, BaseException) else str(exc.reason)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, http.client.IncompleteRead):
        return f"truncated transfer: got {len(exc.partial):,} bytes, {exc.expected:,} more expected"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if exc.strerror[:1].isupper() else exc.strerror
    return str(exc) or type(exc).__name__
