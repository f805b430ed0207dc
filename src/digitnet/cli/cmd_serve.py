"""``digitnet serve MODEL``: the draw-a-digit web page and its JSON API."""

from __future__ import annotations

import argparse
import socket

from digitnet.cli.common import positive_int
from digitnet.errors import ConfigError, DigitnetError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a draw-a-digit web page and a JSON prediction API",
        description="Serve a page where you draw a digit (mouse or touch) and watch the model read it "
        "live: probabilities, the 28x28 image it sees, its hidden layers. Its Train tab trains a new network "
        "in the server while you watch the curves and the first-layer weights (one job at a time; the Draw tab "
        "then uses it). Its Inside tab follows your drawing through the network, forward and backward, with the "
        "numbers digitnet explain prints. Also a JSON API: POST /api/predict, POST /api/explain, GET /api/model, "
        "GET /healthz, /api/train/*, GET /openapi.json.",
    )
    parser.add_argument("model", help="model file (.safetensors) or a run directory")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; the server "
                        "has no authentication, so think before using 0.0.0.0)")
    parser.add_argument("--port", type=positive_int, default=8000, help="port (default 8000)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.port > 65535:
        raise ConfigError(f"--port must be at most 65535, got {args.port}")
    try:
        import uvicorn

        from digitnet.web.server import create_app
    except ImportError as exc:
        raise DigitnetError(f"digitnet serve needs FastAPI and uvicorn ({exc.name} is missing): "
                            "pip install 'digitnet[web]'") from None
    app = create_app(args.model)  # a bad model file fails here, before anything listens
    _check_port_free(args.host, args.port)
    url_host = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
    print(f"digitnet: serving {app.state.info['name']} at http://{url_host}:{args.port}/ (Ctrl-C stops)",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _check_port_free(host: str, port: int) -> None:
    """A clear error now instead of uvicorn's exit when the port is taken or the host is wrong."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ConfigError(f"cannot listen on {host!r}: unknown host name") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror} "
                              "(is another server running? try --port)") from None
