"""A throwaway HTTP server on 127.0.0.1 for download tests (no real network is ever used).

``serve(folder)`` serves the files of ``folder`` on an ephemeral port from a background thread.
Besides plain files it has two special routes that real mirrors sometimes produce:

* ``/short/<file>``: announces the full Content-Length, sends half the bytes and hangs up;
* ``/status/<code>/<file>``: answers with that HTTP status.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:
        pass  # keep test output clean

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if parts[0] == "short" and len(parts) == 2:
            data = (Path(self.directory) / parts[1]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if parts[0] == "status" and len(parts) >= 2:
            self.send_error(int(parts[1]))
            return
        super().do_GET()


@contextlib.contextmanager
def serve(folder: str | Path) -> Iterator[str]:
    """Serve ``folder``; yields the base URL ``http://127.0.0.1:<port>/``."""
    handler = functools.partial(_Handler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def refused_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (the connection is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A port that accepts connections but never answers (for timeout tests)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        sock.close()
