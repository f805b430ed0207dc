"""Fixtures for CLI tests: run ``python -m digitnet`` as a user would, and one small trained run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 240):
    """Run the CLI in a subprocess; returns CompletedProcess with text stdout/stderr."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "digitnet", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=timeout)


@pytest.fixture(scope="session")
def small_run(mnist_path, tmp_path_factory) -> Path:
    """A run directory of a 784-32-10 MLP trained 2 epochs on 5,000 MNIST images (a few seconds)."""
    out = tmp_path_factory.mktemp("runs") / "small"
    result = run_cli("train", "--arch", "784-32-10", "--epochs", "2", "--limit-train", "5000", "--optimizer",
                     "adam", "--lr", "0.003", "--val-split", "0.1", "--out", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    return out
