"""``digitnet sweep`` as a user runs it: flags, a real Ctrl-C and a rerun, and a real Dask cluster on
127.0.0.1 (a scheduler and two workers in their own processes) giving the local results bit for bit."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.conftest import run_cli
from tests.conftest import require_module

#: Each trial is a 784-16-10 MLP trained one epoch on 1,000 MNIST images (about a second, mostly loading).
TINY = ["--preset", "seed-002", "--set", "arch=784-16-10", "--epochs", "1", "--limit-train", "1000",
        "--set", "batch_size=100", "--val-split", "0.1"]


def results(folder: Path) -> list[dict]:
    return json.loads((folder / "results.json").read_text())


def test_bad_settings_fail_at_once_naming_the_choices(tmp_path):
    result = run_cli("sweep", "--grid", "optimizer=sgd,lion", "--out", tmp_path / "s")
    assert result.returncode == 2
    assert "optimizer must be one of sgd, momentum, nesterov, adam" in result.stderr and "'lion'" in result.stderr
    assert not (tmp_path / "s").exists()
    result = run_cli("sweep", "--random", "lr=0.001:0.1", "--out", tmp_path / "s")
    assert result.returncode == 2 and "--trials" in result.stderr
    result = run_cli("sweep", "--grid", "lr=0.1", "--backend", "dask", "--out", tmp_path / "s", *TINY)
    assert result.returncode == 2 and "--scheduler" in result.stderr


def test_dry_run_lists_the_trials(tmp_path):
    result = run_cli("sweep", *TINY, "--grid", "optimizer=sgd,adam", "--grid", "lr=0.01,0.1", "--seeds", "2",
                     "--dry-run", "--out", tmp_path / "s")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("8 trials (seeds ")
    assert "optimizer=adam_lr=0.1_s1: optimizer=adam, lr=0.1, seed " in result.stdout
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_ctrl_c_keeps_finished_trials_and_the_same_command_finishes(mnist_path, tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", *TINY, "--grid", "lr=0.01,0.02,0.03,0.04,0.05,0.06", "--out", str(out), "--no-progress"]
    process = subprocess.Popen([sys.executable, "-m", "digitnet", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if (out / "results.json").exists() and len(results(out)) >= 2:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "run the same command again" in stderr
    kept = results(out)
    assert 2 <= len(kept) < 6 and all(row["status"] == "ok" for row in kept)
    mtimes = {row["trial"]: (out / row["run_dir"] / "model.safetensors").stat().st_mtime_ns for row in kept}

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert f"{6 - len(kept)} trials trained" in again.stdout and f"{len(kept)} finished before" in again.stdout
    rows = results(out)
    assert [row["lr"] for row in rows] == [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]
    assert rows[0]["command"].startswith("OPENBLAS_NUM_THREADS=1 digitnet train --preset seed-002 ")
    for name, mtime in mtimes.items():
        assert (out / "runs" / name / "model.safetensors").stat().st_mtime_ns == mtime
    assert rows[:len(kept)] == kept

    report = run_cli("report", out)  # the pictures of the finished sweep
    assert report.returncode == 0, report.stderr
    assert "report.html" in report.stdout and (out / "sweep.png").stat().st_size > 10_000
    assert "Settings by mean test accuracy" in (out / "report.html").read_text()


# -- a real Dask cluster on 127.0.0.1 -------------------------------------------------------------
@contextlib.contextmanager
def dask_cluster(folder: Path, workers: int = 2):
    """A ``dask scheduler`` and ``workers`` single-threaded ``dask worker`` processes bound to 127.0.0.1;
    yields the scheduler's address and stops every process at the end."""
    require_module("distributed")
    scheduler_file = folder / "scheduler.json"
    common = ["--no-dashboard"]
    env = dict(os.environ)  # DIGITNET_DATA: the workers find MNIST through the same lookup
    processes = []
    logs = []

    def start(module: str, *args: str) -> None:
        log = open(folder / f"{module}-{len(processes)}.log", "w")  # closed in the finally below
        logs.append(log)
        processes.append(subprocess.Popen([sys.executable, "-m", f"distributed.cli.{module}", *args, *common],
                                          stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder))

    try:
        start("dask_scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file", str(scheduler_file))
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            assert processes[0].poll() is None, (folder / "dask_scheduler-0.log").read_text()
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:"), address
        for _ in range(workers):
            start("dask_worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
                  "--local-directory", str(folder / "workers"))
        import distributed

        with distributed.Client(address, timeout=30) as client:
            client.wait_for_workers(workers, timeout=60)
        yield address
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()


@pytest.mark.slow
def test_a_sweep_on_a_dask_cluster_equals_the_local_sweep_bit_for_bit(mnist_path, tmp_path):
    require_module("distributed")
    args = ["sweep", *TINY, "--grid", "optimizer=sgd,adam", "--seeds", "2", "--sweep-seed", "5", "--no-progress"]
    local = run_cli(*args, "--out", tmp_path / "local")
    assert local.returncode == 0, local.stderr
    with dask_cluster(tmp_path) as address:
        remote = run_cli(*args, "--out", tmp_path / "dask", "--backend", "dask", "--scheduler", address)
    assert remote.returncode == 0, remote.stderr
    assert "4 trials trained" in remote.stdout and "on 2 workers" in remote.stdout
    assert f"on Dask scheduler {address}" in remote.stderr
    a, b = results(tmp_path / "local"), results(tmp_path / "dask")
    assert len(a) == len(b) == 4
    same = ["trial", "optimizer", "seed", "status", "test_accuracy", "test_loss", "best_val_accuracy",
            "final_val_accuracy", "epochs_run", "weights_sha256", "command"]
    assert [{k: r[k] for k in same} for r in a] == [{k: r[k] for k in same} for r in b]
    assert len({r["weights_sha256"] for r in a}) == 4
    for row in a:  # the run directories the driver wrote hold the same files
        for name in ("history.json", "initial.safetensors"):
            here, there = tmp_path / "local" / row["run_dir"] / name, tmp_path / "dask" / row["run_dir"] / name
            if name == "history.json":  # per-epoch seconds differ; every number that was learned does not
                h1, h2 = json.loads(here.read_text()), json.loads(there.read_text())
                h1.pop("seconds"), h2.pop("seconds")
                assert h1 == h2
            else:
                assert here.read_bytes() == there.read_bytes()
