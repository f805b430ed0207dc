"""Bounded load test of ``digitnet serve``: concurrent clients POST canvas drawings to /api/predict.

Usage::

    python benchmarks/load_test.py MODEL [--clients 20] [--requests 2000] [--time-limit 120]
    python benchmarks/load_test.py --url http://127.0.0.1:8000 [...]   # an already running server

Without ``--url`` it starts ``digitnet serve MODEL`` on 127.0.0.1 and a free port in a subprocess
(so the clients do not share the server's interpreter) and stops it afterwards. Each client keeps
one HTTP/1.1 connection and sends 280x280 PNG drawings (what the page sends) until the request
budget or the time limit is used up. Prints latency percentiles, throughput and errors. Not a test:
it asserts nothing and only ever talks to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def drawings() -> list[bytes]:
    """A few PNG drawings of digits (dark strokes on white, like the page's canvas)."""
    strokes = [
        [[(140, 50), (140, 230)]],  # 1
        [[(80, 60), (200, 60), (120, 230)]],  # 7
        [[(85, 90), (120, 55), (175, 60), (190, 100), (160, 150), (85, 225), (200, 225)]],  # 2
        [[(170, 50), (80, 160), (210, 160)], [(170, 50), (170, 230)]],  # 4
    ]
    payloads = []
    for lines in strokes:
        image = Image.new("L", (280, 280), 255)
        pen = ImageDraw.Draw(image)
        for line in lines:
            pen.line(line, fill=17, width=18, joint="curve")
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        payloads.append(buffer.getvalue())
    return payloads


def start_server(model: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "digitnet", "serve", model, "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {process.stderr.read()}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return process, url
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit("the server did not start within 60 s")


def run(url: str, clients: int, requests: int, time_limit: float) -> dict:
    parsed = urllib.parse.urlparse(url)
    payloads = drawings()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    budget = iter(range(requests))
    deadline = time.monotonic() + time_limit

    def client(index: int) -> None:
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=30)
        while time.monotonic() < deadline:
            with lock:
                number = next(budget, None)
            if number is None:
                break
            started = time.perf_counter()
            try:
                connection.request("POST", "/api/predict", body=payloads[number % len(payloads)],
                                   headers={"Content-Type": "image/png"})
                response = connection.getresponse()
                body = response.read()
                elapsed = time.perf_counter() - started
                ok = response.status == 200 and "label" in json.loads(body)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                elapsed, ok = time.perf_counter() - started, False
                body = str(exc).encode()
                connection.close()
                connection = http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=30)
            with lock:
                latencies.append(elapsed)
                if not ok:
                    errors.append(body[:200].decode("utf-8", "replace"))
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, deadline - time.monotonic() + 35))
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "clients": clients, "requests": len(latencies), "errors": len(errors), "seconds": round(wall, 2),
        "requests_per_second": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
        "p90_ms": round(float(np.percentile(ms, 90)), 1) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
        "max_ms": round(float(ms.max()), 1) if len(ms) else None,
        "first_errors": errors[:3],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", help="model file to serve (omit with --url)")
    parser.add_argument("--url", help="an already running server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--time-limit", type=float, default=120.0, help="stop sending after this many seconds")
    args = parser.parse_args()
    if not args.url and not args.model:
        parser.error("give a MODEL file or --url")
    if args.model and not Path(args.model).exists():
        parser.error(f"model not found: {args.model}")
    args.clients = max(1, min(args.clients, 200))
    args.requests = max(1, min(args.requests, 100_000))
    process = None
    url = args.url
    if not url:
        process, url = start_server(args.model)
    try:
        result = run(url, args.clients, args.requests, args.time_limit)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=20)
    print(f"{result['requests']} requests from {result['clients']} clients in {result['seconds']} s "
          f"({result['requests_per_second']} req/s), errors: {result['errors']}")
    print(f"latency ms: p50 {result['p50_ms']}  p90 {result['p90_ms']}  p99 {result['p99_ms']}  "
          f"max {result['max_ms']}")
    print(json.dumps(result))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
