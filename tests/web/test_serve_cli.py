"""``digitnet serve``: starts a real server; clear one-line errors for a bad model, a busy port, no FastAPI."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from digitnet.cli import main


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_answers_then_stops(model_file):
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "digitnet", "serve", str(model_file), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        health = None
        for _ in range(300):  # up to ~30 s on a busy machine
            if process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    health = json.loads(response.read())
                break
            except OSError:
                time.sleep(0.1)
        assert health == {"status": "ok", "model": "model.safetensors"}, process.stderr and process.poll()
    finally:
        process.terminate()
        out, err = process.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}/" in out
    assert "Traceback" not in err


def test_bad_model_file_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"nonsense")
    assert main(["serve", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("digitnet serve: error:") and err.count("\n") == 1


def test_busy_port_is_one_line_error(model_file, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(model_file), "--port", str(port)]) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


def test_port_out_of_range(model_file, capsys):
    assert main(["serve", str(model_file), "--port", "70000"]) == 2
    assert "65535" in capsys.readouterr().err


def test_missing_web_extra_says_what_to_install(model_file, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now raises ImportError
    assert main(["serve", str(model_file)]) == 2
    assert "pip install 'digitnet[web]'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["serve", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "--port" in capsys.readouterr().out
