"""digitnet.sweep: parsing and checking settings, the plan and its seeds, the driver (resume, Ctrl-C,
atomic results) and re-running one trial alone bit for bit."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from digitnet import sweep
from digitnet.cli.cmd_sweep import train_command
from digitnet.config import TrainConfig, load_preset
from digitnet.errors import ConfigError, TrainingInterrupted
from digitnet.sweep import (
    parse_grid,
    parse_random,
    parse_setting,
    parse_value,
    plan_sweep,
    read_results,
    run_sweep,
    summary_text,
    sweep_seeds,
)

#: A trial of about a second: a small MLP, 1,000 MNIST images, one epoch (most of it is loading MNIST).
TINY = dict(arch="784-16-10", epochs=1, limit_train=1000, batch_size=100, val_split=0.1)


def tiny_base(**changes) -> TrainConfig:
    return load_preset("seed-002").replace(**{**TINY, **changes})


def quiet(message: str) -> None:
    pass


# -- settings ----------------------------------------------------------------------------------
def test_values_are_checked_by_the_config_constraints():
    assert parse_value("lr", "0.05") == 0.05
    assert parse_value("epochs", "3") == 3
    assert parse_value("optimizer", "Adam") == "adam"
    assert parse_value("arch", "784-64-10") == "784-64-10"
    assert parse_value("augment", '{"shift": 1.0}') == {"shift": 1.0}
    assert parse_value("momentum", "none") is None
    assert parse_setting("batch-size=64") == ("batch_size", 64)
    with pytest.raises(ConfigError, match="optimizer must be one of sgd, .*adam.*got 'lion'"):
        parse_grid(["optimizer=sgd,lion"])
    with pytest.raises(ConfigError, match="lr must be > 0"):
        parse_grid(["lr=0.1,-1"])
    with pytest.raises(ConfigError, match="unknown setting 'learning_rate'"):
        parse_grid(["learning_rate=0.1"])
    with pytest.raises(ConfigError, match="--seeds"):
        parse_grid(["seed=1,2"])
    with pytest.raises(ConfigError, match="twice"):
        parse_grid(["lr=0.1,0.10"])
    with pytest.raises(ConfigError, match="KEY=VALUES"):
        parse_grid(["lr"])


def test_grid_values_with_commas_inside_json():
    grid = parse_grid(['augment={"shift": 1.0, "rotate": 5.0},none', "optimizer=sgd,adam"])
    assert grid == {"augment": [{"shift": 1.0, "rotate": 5.0}, None], "optimizer": ["sgd", "adam"]}


def test_random_ranges():
    ranges = parse_random(["lr=0.001:0.3:log", "batch_size=32:256"])
    assert ranges["lr"].log and not ranges["batch_size"].log
    rng = np.random.default_rng(0)
    draws = [ranges["batch_size"].draw(rng) for _ in range(50)]
    assert all(isinstance(d, int) and 32 <= d <= 256 for d in draws)
    lrs = [ranges["lr"].draw(rng) for _ in range(200)]
    assert 0.001 <= min(lrs) and max(lrs) <= 0.3 and np.median(lrs) < 0.05  # log scale: median near 0.017
    with pytest.raises(ConfigError, match="only numeric"):
        parse_random(["optimizer=1:2"])
    with pytest.raises(ConfigError, match="LOW must be below HIGH"):
        parse_random(["lr=0.3:0.1"])
    with pytest.raises(ConfigError, match="LOW > 0"):
        parse_random(["dropout=0:0.5:log"])
    with pytest.raises(ConfigError, match=r"dropout must be \[0, 1\)"):
        parse_random(["dropout=0:1.5"])


# -- the plan ----------------------------------------------------------------------------------
def test_plan_is_every_combination_times_seeds_with_seeds_from_one_seed_sequence():
    plan = plan_sweep(tiny_base(), parse_grid(["optimizer=sgd,adam", "lr=0.01,0.1"]), seeds=3, sweep_seed=7)
    assert len(plan.trials) == 12 and plan.keys == ["optimizer", "lr"]
    assert plan.seeds == sweep_seeds(7, 3) and len(set(plan.seeds)) == 3
    assert sweep_seeds(7, 5)[:3] == plan.seeds  # more seeds keep the first ones
    first = plan.trials[0]
    assert first.name == "optimizer=sgd_lr=0.01_s0" and first.group == "optimizer=sgd, lr=0.01"
    assert first.config == tiny_base().replace(optimizer="sgd", lr=0.01, seed=plan.seeds[0])
    # every setting is trained on the same seeds: the comparison is paired
    assert [t.seed for t in plan.trials] == plan.seeds * 4
    assert len({t.name for t in plan.trials}) == 12


def test_random_search_is_seeded_and_crossed_with_the_grid():
    a = plan_sweep(tiny_base(), parse_grid(["optimizer=sgd,adam"]), parse_random(["lr=0.001:0.3:log"]),
                   trials=4, seeds=2, sweep_seed=1)
    b = plan_sweep(tiny_base(), parse_grid(["optimizer=sgd,adam"]), parse_random(["lr=0.001:0.3:log"]),
                   trials=4, seeds=2, sweep_seed=1)
    assert len(a.trials) == 2 * 4 * 2
    assert [t.config for t in a.trials] == [t.config for t in b.trials]
    lrs = {t.settings["lr"] for t in a.trials}
    assert len(lrs) == 4
    assert a.trials[0].name == "optimizer=sgd_r000_s0"
    with pytest.raises(ConfigError, match="--trials"):
        plan_sweep(tiny_base(), random=parse_random(["lr=0.001:0.3"]))
    with pytest.raises(ConfigError, match="--random"):
        plan_sweep(tiny_base(), trials=3)


def test_a_config_that_cannot_be_built_fails_when_planning():
    with pytest.raises(ConfigError, match="arch=784-x-10"):
        plan_sweep(tiny_base(), parse_grid(["arch=784-16-10,784-x-10"]))


def test_train_command_reparses_to_the_same_config():
    config = tiny_base(optimizer="adam", lr=0.003, seed=123)
    command = train_command(config, "runs/x", "fast")
    assert command.startswith("OPENBLAS_NUM_THREADS=1 digitnet train --preset seed-002 ")
    assert "--optimizer adam" in command and "--seed 123" in command and "--l2" not in command
    # a setting without a flag: no command (the Python API re-runs it)
    assert train_command(config.replace(gamma=0.25), "runs/x", "fast") is None


# -- running -------------------------------------------------------------------------------------
@pytest.fixture
def tiny_plan():
    return plan_sweep(tiny_base(), parse_grid(["optimizer=sgd,adam"]), seeds=2, sweep_seed=3)


@pytest.mark.slow
def test_sweep_writes_run_dirs_and_a_results_table(mnist_path, tmp_path, tiny_plan):
    result = run_sweep(tiny_plan, tmp_path, log=quiet, progress=False)
    assert result.ran == 4 and result.reused == 0 and not result.interrupted
    rows = read_results(tmp_path)
    assert [r["trial"] for r in rows] == [t.name for t in tiny_plan.trials]
    for row, trial in zip(rows, tiny_plan.trials, strict=True):
        assert row["status"] == "ok" and row["seed"] == trial.seed and row["optimizer"] == trial.settings["optimizer"]
        assert 0.15 < row["test_accuracy"] <= 1 and row["best_val_accuracy"] is not None and row["seconds"] > 0
        folder = tmp_path / row["run_dir"]
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "history.json", "initial.safetensors",
                                                            "model.safetensors"]
        assert json.loads((folder / "config.json").read_text())["seed"] == trial.seed
    with open(tmp_path / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [r["trial"] for r in table] == [r["trial"] for r in rows]
    assert float(table[0]["test_accuracy"]) == rows[0]["test_accuracy"]
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["grid"] == {"optimizer": ["sgd", "adam"]} and saved["seeds"] == tiny_plan.seeds
    assert "optimizer=adam" in summary_text(rows, tiny_plan.keys)
    # the same seed, different settings: different weights; same settings, different seeds: too
    assert len({r["weights_sha256"] for r in rows}) == 4


@pytest.mark.slow
def test_one_trial_reruns_alone_bit_for_bit(mnist_path, tmp_path):
    """A trial's config.json through the Python API, and its command from the table through the CLI."""
    from threadpoolctl import threadpool_limits

    from digitnet.runs import read_run_config, run_training

    plan = plan_sweep(tiny_base(optimizer="adam", lr=0.003), seeds=1, sweep_seed=11)
    run_sweep(plan, tmp_path / "sweep", log=quiet, progress=False, command_for=train_command)
    row = read_results(tmp_path / "sweep")[0]
    with threadpool_limits(1):
        again = run_training(read_run_config(tmp_path / "sweep" / row["run_dir"]), tmp_path / "api", quiet=True,
                             log=quiet, kernels="fast")
    assert sweep.weights_digest(again.model.state_dict()) == row["weights_sha256"]
    assert again.metrics["test_accuracy"] == row["test_accuracy"]

    env_prefix, program, *args = row["command"].split()
    assert env_prefix == "OPENBLAS_NUM_THREADS=1" and program == "digitnet"
    args[args.index("--out") + 1] = str(tmp_path / "cli")
    done = subprocess.run([sys.executable, "-m", "digitnet", *args, "--no-progress"], capture_output=True,
                          text=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"}, timeout=240)
    assert done.returncode == 0, done.stderr
    assert sweep._file_digest(tmp_path / "cli" / "model.safetensors") == row["weights_sha256"]


@pytest.mark.slow
def test_interrupted_sweep_keeps_finished_trials_and_a_rerun_skips_them(mnist_path, tmp_path, tiny_plan,
                                                                        monkeypatch):
    real, real_run_named = sweep.local_outcomes, sweep._run_named

    def interrupted_after_two(tasks, jobs=1):
        for count, outcome in enumerate(real(tasks, jobs)):
            if count == 2:
                raise KeyboardInterrupt
            yield outcome

    monkeypatch.setattr(sweep, "local_outcomes", interrupted_after_two)
    with pytest.raises(TrainingInterrupted, match="2 of 4 trials are finished"):
        run_sweep(tiny_plan, tmp_path, log=quiet, progress=False)
    rows = read_results(tmp_path)
    assert [r["trial"] for r in rows] == [t.name for t in tiny_plan.trials[:2]]
    finished = {r["trial"]: (tmp_path / r["run_dir"] / "model.safetensors").stat().st_mtime_ns for r in rows}
    assert not (tmp_path / "runs" / tiny_plan.trials[2].name / "model.safetensors").exists()

    monkeypatch.setattr(sweep, "local_outcomes", real)
    ran = []
    monkeypatch.setattr(sweep, "_run_named", lambda name, *a: ran.append(name) or real_run_named(name, *a))
    result = run_sweep(tiny_plan, tmp_path, log=quiet, progress=False)
    assert result.reused == 2 and result.ran == 2
    assert ran == [t.name for t in tiny_plan.trials[2:]]
    assert [r["trial"] for r in result.rows] == [t.name for t in tiny_plan.trials]
    for name, mtime in finished.items():  # not trained again, not rewritten
        assert (tmp_path / "runs" / name / "model.safetensors").stat().st_mtime_ns == mtime
    assert result.rows[:2] == rows


def test_a_changed_config_is_trained_again(tmp_path, tiny_plan, monkeypatch):
    """A run directory whose config.json differs from the trial's is not a finished trial."""
    trial = tiny_plan.trials[0]
    folder = sweep.trial_dir(tmp_path, trial)
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x")
    (folder / "config.json").write_text(json.dumps(trial.config.replace(epochs=2).to_dict()))
    assert sweep._finished(folder, trial) is None
    (folder / "config.json").write_text(json.dumps(trial.config.to_dict()))
    assert sweep._finished(folder, trial) == "ok"


def test_a_diverged_trial_is_recorded_not_fatal(tmp_path, monkeypatch, tiny_plan):
    def outcomes(tasks, jobs=1):
        for name, config, _ in tasks:
            yield name, {"status": "diverged", "error": "training diverged: the loss became nan", "metrics": {},
                         "history": None, "files": {"config.json": json.dumps(config).encode()},
                         "weights_sha256": None, "seconds": 0.5, "worker": "here:1"}

    monkeypatch.setattr(sweep, "local_outcomes", outcomes)
    result = run_sweep(tiny_plan, tmp_path, log=quiet, progress=False)
    assert [r["status"] for r in result.rows] == ["diverged"] * 4
    assert "no finished trial, 2 diverged" in summary_text(result.rows, tiny_plan.keys)
    again = run_sweep(tiny_plan, tmp_path, log=quiet, progress=False)  # recorded: not tried again
    assert again.ran == 0 and again.reused == 4


def test_backend_errors(tmp_path, tiny_plan):
    with pytest.raises(ConfigError, match="--scheduler"):
        run_sweep(tiny_plan, tmp_path, backend="dask", log=quiet)
    with pytest.raises(ConfigError, match="unknown backend"):
        run_sweep(tiny_plan, tmp_path, backend="spark", log=quiet)
    with pytest.raises(ConfigError, match="--jobs"):
        run_sweep(tiny_plan, tmp_path, jobs=0, log=quiet)
