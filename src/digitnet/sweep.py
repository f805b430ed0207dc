"""Many trainings: a grid and/or a random search over TrainConfig settings, times seeds.

A sweep is a base :class:`~digitnet.config.TrainConfig` (a preset and some changes), a *grid* (every
combination of the values given for some settings), an optional *random search* (``trials`` draws of
settings from ranges) and a number of *seeds*. Every combination trains once per seed, each trial an
ordinary run directory::

    from digitnet.config import load_preset
    from digitnet.sweep import plan_sweep, run_sweep

    plan = plan_sweep(load_preset("seed-002").replace(epochs=2),
                      grid={"optimizer": ["sgd", "momentum", "adam"], "lr": [0.01, 0.05, 0.1]}, seeds=3)
    result = run_sweep(plan, "sweeps/opt", jobs=2)          # or backend="dask", scheduler="tcp://..."

A sweep directory holds::

    sweep.json                  the sweep's settings: base config, grid, random ranges, seeds
    results.csv, results.json   one row per finished trial: settings, seed, test accuracy, best
                                validation accuracy, seconds, weights hash, the `digitnet train` command
    runs/<trial>/               config.json, initial.safetensors, history.json, model.safetensors

**Seeds.** Every seed comes from one ``numpy.random.SeedSequence(sweep_seed)``: its first child spawns
one seed per repeat (the same seeds for every setting, so settings are compared on the same draws),
its second child drives the random search. A trial's seed is written into its config.json, so
``run_training(read_run_config(trial_dir), out)`` or the ``digitnet train ... --seed N`` command in
the results table (written by ``digitnet sweep``) trains it again, bit for bit (with one BLAS thread,
as the trials ran).

**Where trials run.** :func:`run_trial` trains one trial with BLAS limited to one thread
(threadpoolctl) in a temporary directory and returns the metrics, the history and the files' bytes;
it is a pure function of (config, kernels). With ``backend="local"`` trials run in joblib's process
pool (``jobs`` workers; 1 = in this process); with ``backend="dask"`` they are submitted to a Dask
scheduler (``distributed.Client(scheduler)``), whose workers find the data through the usual lookup
(``$DIGITNET_DATA``, the cache, a download) and need the same digitnet installed. Either way the
*driver* (this process) writes each trial's run directory and the results table, every file
atomically, as soon as the trial finishes: a Ctrl-C keeps every finished trial, and running the same
sweep again skips the trials whose run directory has a model.safetensors from the same config.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitnet import __version__
from digitnet.atomic import read_json_object
from digitnet.config import CONSTRAINTS, TrainConfig, config_field_names
from digitnet.errors import ConfigError, DigitnetError, TrainingInterrupted

SWEEP_FILE = "sweep.json"
RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
RUNS_DIR = "runs"
FAILED_FILE = "failed.json"
#: The files of a finished trial, in the order the driver writes them: model.safetensors last, so its
#: presence means the trial finished.
TRIAL_FILES = ("config.json", "initial.safetensors", "history.json", "model.safetensors")
#: Fields that name or describe a run rather than set how it trains; ``seed`` comes from ``seeds``.
NOT_SWEPT = {"seed": "seeds come from the sweep's SeedSequence: use --seeds N (and --sweep-seed S)",
             "preset": "sweep one preset at a time (--preset NAME)",
             "description": "it only describes a preset", "reported_accuracy": "it only describes a preset"}
BACKENDS = ("local", "dask")


# ----------------------------------------------------------------------------------------------
# Settings: parsing and checking (every range comes from config.CONSTRAINTS, through TrainConfig)
# ----------------------------------------------------------------------------------------------
def _check_key(key: str) -> str:
    key = key.strip().replace("-", "_")
    if key not in config_field_names():
        raise ConfigError(f"unknown setting {key!r}; settings are TrainConfig fields: "
                          f"{', '.join(n for n in config_field_names() if n not in NOT_SWEPT)}")
    if key in NOT_SWEPT:
        raise ConfigError(f"cannot sweep {key!r}: {NOT_SWEPT[key]}")
    return key


def parse_value(key: str, text: str) -> Any:
    """The value of setting ``key`` written as ``text``, checked as TrainConfig checks it.

    Settings in :data:`digitnet.config.CONSTRAINTS` are converted and range-checked by their
    :class:`~digitnet.nn.registry.Setting` (so ``optimizer=lion`` fails naming the choices); other
    fields (``arch``, ``augment``, ``dataset``, ...) are JSON when they parse as JSON, else the text.
    ``none`` (or ``null``) is None.
    """
    key = _check_key(key)
    text = text.strip()
    if text.lower() in ("none", "null"):
        return None
    setting = CONSTRAINTS.get(key)
    if setting is not None:
        return setting.check(text, "")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _split_values(text: str) -> list[str]:
    """``a,b,{"x": 1, "y": 2}`` -> three values: commas inside brackets or braces do not split."""
    values, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            values.append(text[start:i])
            start = i + 1
    values.append(text[start:])
    return values


def _key_and_text(item: str, flag: str, example: str) -> tuple[str, str]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip() or not text.strip():
        raise ConfigError(f"{flag} takes KEY=VALUES, e.g. {flag} {example}; got {item!r}")
    return _check_key(key), text


def parse_setting(item: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> ``(key, value)``, checked by :func:`parse_value` (``--set``)."""
    key, text = _key_and_text(item, "--set", "epochs=2")
    return key, parse_value(key, text)


def parse_grid(items: Iterable[str]) -> dict[str, list[Any]]:
    """``["lr=0.01,0.1", "optimizer=sgd,adam"]`` -> ``{"lr": [0.01, 0.1], "optimizer": ["sgd", "adam"]}``."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, text = _key_and_text(item, "--grid", "lr=0.01,0.05,0.1")
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice: list all its values in one --grid {key}=V1,V2")
        values = [parse_value(key, v) for v in _split_values(text)]
        seen: list[Any] = []
        for value in values:
            if value in seen:
                raise ConfigError(f"--grid {key} lists {value!r} twice")
            seen.append(value)
        grid[key] = values
    return grid


@dataclass(frozen=True)
class RandomRange:
    """A setting drawn uniformly from ``[low, high]`` (on a log scale with ``log``); ints are rounded."""

    key: str
    low: float
    high: float
    log: bool = False

    @property
    def integer(self) -> bool:
        return CONSTRAINTS[self.key].kind == "int"

    def draw(self, rng: np.random.Generator) -> float | int:
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        value = min(max(value, self.low), self.high)  # exp(log(x)) may round just past a bound
        return int(round(value)) if self.integer else float(value)

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "log": self.log}

    def text(self) -> str:
        return f"{self.key}={self.low:g}:{self.high:g}{':log' if self.log else ''}"


def parse_random(items: Iterable[str]) -> dict[str, RandomRange]:
    """``["lr=0.001:0.3:log", "dropout=0:0.5"]`` -> the ranges, each bound checked like a value."""
    ranges: dict[str, RandomRange] = {}
    for item in items:
        key, text = _key_and_text(item, "--random", "lr=0.001:0.3:log")
        setting = CONSTRAINTS.get(key)
        if setting is None or setting.kind not in ("int", "float") or setting.allowed():
            numeric = [n for n, s in CONSTRAINTS.items() if s.kind in ("int", "float") and n not in NOT_SWEPT]
            raise ConfigError(f"--random {key}: only numeric settings can be drawn at random "
                              f"({', '.join(numeric)}); use --grid for {key}")
        parts = text.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2].strip().lower() != "log"):
            raise ConfigError(f"--random takes KEY=LOW:HIGH or KEY=LOW:HIGH:log, got {item!r}")
        low, high = (parse_value(key, p) for p in parts[:2])
        if low is None or high is None or not low < high:
            raise ConfigError(f"--random {key}: LOW must be below HIGH, got {text!r}")
        log = len(parts) == 3
        if log and low <= 0:
            raise ConfigError(f"--random {key}: a log scale needs LOW > 0, got {low}")
        if key in ranges:
            raise ConfigError(f"--random {key} is given twice")
        ranges[key] = RandomRange(key, float(low), float(high), log)
    return ranges


# ----------------------------------------------------------------------------------------------
# The plan: which trials, with which configs and seeds
# ----------------------------------------------------------------------------------------------
def sweep_seeds(sweep_seed: int, count: int) -> list[int]:
    """The seeds of repeats 0..count-1: children of the first child of ``SeedSequence(sweep_seed)``
    (so asking for more seeds keeps the first ones)."""
    seeds_seq = np.random.SeedSequence(sweep_seed).spawn(2)[0]
    return [int(child.generate_state(1, dtype=np.uint32)[0]) for child in seeds_seq.spawn(count)]


def _random_rng(sweep_seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(sweep_seed).spawn(2)[1])


def format_value(value: Any) -> str:
    """A setting's value as text: floats as Python writes them (``0.05``), JSON for dicts and lists."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def _dir_name(parts: list[str]) -> str:
    return re.sub(r"[^A-Za-z0-9=.,+_-]", "-", "_".join(parts))


@dataclass(frozen=True)
class Trial:
    """One training of the sweep: its settings (the swept values), its repeat and seed, its config."""

    name: str
    settings: dict[str, Any]
    repeat: int
    seed: int
    config: TrainConfig
    draw: int | None = None

    @property
    def group(self) -> str:
        """The trials of one group differ only in their seed: ``optimizer=adam, lr=0.01``."""
        text = ", ".join(f"{k}={format_value(v)}" for k, v in self.settings.items())
        if self.draw is not None:
            text = f"draw {self.draw}" + (f": {text}" if text else "")
        return text or "base"


@dataclass
class SweepPlan:
    """Every trial of a sweep, in order (settings major, seeds minor), and how they were made."""

    base: TrainConfig
    grid: dict[str, list[Any]]
    random: dict[str, RandomRange]
    draws: int
    seeds: list[int]
    sweep_seed: int
    trials: list[Trial]

    @property
    def keys(self) -> list[str]:
        """The swept settings: grid keys, then random keys."""
        return [*self.grid, *self.random]

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base.to_dict(), "grid": self.grid,
                "random": {k: r.to_dict() for k, r in self.random.items()}, "trials": self.draws,
                "seeds": self.seeds, "sweep_seed": self.sweep_seed, "trial_count": len(self.trials),
                "keys": self.keys}


def plan_sweep(base: TrainConfig, grid: dict[str, list[Any]] | None = None,
               random: dict[str, RandomRange] | None = None, trials: int = 0, seeds: int = 1,
               sweep_seed: int = 0) -> SweepPlan:
    """The trials of a sweep: every combination of ``grid`` (crossed with ``trials`` random draws of
    ``random``) times ``seeds`` seeds. Every trial's config is validated here (ConfigError at once)."""
    grid = {_check_key(k): list(v) for k, v in (grid or {}).items()}
    random = dict(random or {})
    if any(not values for values in grid.values()):
        raise ConfigError("every --grid setting needs at least one value")
    overlap = sorted(set(grid) & set(random))
    if overlap:
        raise ConfigError(f"{', '.join(overlap)} is both in --grid and --random")
    if random and trials < 1:
        raise ConfigError("--random needs --trials N (how many random draws)")
    if trials and not random:
        raise ConfigError("--trials N is the budget of a random search: give --random KEY=LOW:HIGH[:log]")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if not 0 <= sweep_seed < 2**128:
        raise ConfigError(f"the sweep seed must be a non-negative integer, got {sweep_seed}")
    seed_list = sweep_seeds(sweep_seed, seeds)
    rng = _random_rng(sweep_seed)
    draws: list[dict[str, Any] | None] = [{k: r.draw(rng) for k, r in random.items()}
                                          for _ in range(trials)] if random else [None]
    combos: list[dict[str, Any]] = [{}]
    for key, values in grid.items():
        combos = [{**combo, key: value} for combo in combos for value in values]

    base_dict = base.to_dict()
    checked: set[str] = set()
    items: list[Trial] = []
    for combo in combos:
        for d, drawn in enumerate(draws):
            settings = {**combo, **(drawn or {})}
            draw = d if drawn is not None else None
            for repeat, seed in enumerate(seed_list):
                config = TrainConfig.from_dict({**base_dict, **settings, "seed": seed})
                parts = [f"{k}={format_value(v)}" for k, v in combo.items()]
                parts += [f"r{draw:03d}"] if draw is not None else []
                trial = Trial(_dir_name([*parts, f"s{repeat}"]), settings, repeat, seed, config, draw)
                if trial.group not in checked:  # build what the config names once per group
                    _check_buildable(config, trial.group)
                    checked.add(trial.group)
                items.append(trial)
    names = [t.name for t in items]
    if len(set(names)) != len(names):  # cannot happen with repr'd values; a guard for the resume logic
        raise ConfigError("two trials would share a run directory name")
    return SweepPlan(base, grid, random, trials, seed_list, sweep_seed, items)


def _check_buildable(config: TrainConfig, group: str) -> None:
    from digitnet.training.build import build_parts

    try:
        build_parts(config)
    except ConfigError as exc:
        raise ConfigError(f"{group}: {exc}") from None


# ----------------------------------------------------------------------------------------------
# One trial, on a worker
# ----------------------------------------------------------------------------------------------
def weights_digest(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over the model's tensors (names and bytes, in name order): equal iff the weights are."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        digest.update(name.encode())
        digest.update(str(array.dtype).encode() + str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    from digitnet.io import read_safetensors

    return weights_digest(read_safetensors(path).tensors)


def run_trial(config: dict[str, Any], kernels: str) -> dict[str, Any]:
    """Train one trial where this function runs (a joblib or Dask worker, or this process).

    A pure function of its arguments: one thread for BLAS (threadpoolctl) and the kernels, the given ``kernels``, the
    data found through the usual lookup, a temporary run directory. Returns ``{"status": "ok" or
    "diverged", "error", "metrics", "history", "files": {name: bytes}, "weights_sha256", "seconds",
    "worker"}``; the caller writes the files. Errors other than divergence propagate.
    """
    from threadpoolctl import threadpool_limits

    from digitnet.errors import DivergenceError
    from digitnet.runs import HISTORY_FILE, MODEL_FILE, run_training

    cfg = TrainConfig.from_dict(config)
    started = time.perf_counter()
    status, error, metrics, digest = "ok", None, {}, None
    with tempfile.TemporaryDirectory(prefix="digitnet-trial-") as tmp, threadpool_limits(1):
        folder = Path(tmp)
        try:
            result = run_training(cfg, folder, quiet=True, progress=False, kernels=kernels, threads=1,
                                  log=lambda m: None)
            metrics = result.metrics
            digest = _file_digest(folder / MODEL_FILE)
        except DivergenceError as exc:
            status, error = "diverged", str(exc).replace(str(folder), "<run dir>")
        files = {name: (folder / name).read_bytes() for name in TRIAL_FILES if (folder / name).exists()}
        history = json.loads(files[HISTORY_FILE]) if HISTORY_FILE in files else None
    return {"status": status, "error": error, "metrics": metrics, "history": history, "files": files,
            "weights_sha256": digest, "seconds": time.perf_counter() - started,
            "worker": f"{socket.gethostname()}:{os.getpid()}"}


# ----------------------------------------------------------------------------------------------
# Where trials run
# ----------------------------------------------------------------------------------------------
Task = tuple[str, dict[str, Any], str]  # (trial name, config dict, kernels)


def _run_named(name: str, config: dict[str, Any], kernels: str) -> tuple[str, dict[str, Any]]:
    return name, run_trial(config, kernels)


def local_outcomes(tasks: list[Task], jobs: int = 1) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(name, outcome)`` as trials finish: in this process (``jobs == 1``) or joblib's process pool."""
    if jobs == 1 or len(tasks) <= 1:
        for task in tasks:
            yield _run_named(*task)
        return
    from joblib import Parallel, delayed

    parallel = Parallel(n_jobs=jobs, return_as="generator_unordered")
    yield from parallel(delayed(_run_named)(*task) for task in tasks)


def dask_outcomes(tasks: list[Task], scheduler: str, timeout: float = 20) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(name, outcome)`` as trials finish on the Dask cluster whose scheduler is at ``scheduler``."""
    try:
        import distributed
    except ImportError:
        raise ConfigError("--backend dask needs the dask extra: pip install 'digitnet[dask]'") from None
    try:
        client = distributed.Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    futures = []
    try:
        futures = [client.submit(_run_named, *task, pure=True) for task in tasks]
        for future in distributed.as_completed(futures):
            yield future.result()
    finally:
        if futures:
            client.cancel(futures)
        client.close()


# ----------------------------------------------------------------------------------------------
# The driver: resume, write trials and the table as they finish
# ----------------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """What :func:`run_sweep` did: the table of finished trials and how many ran now or before."""

    sweep_dir: Path
    plan: SweepPlan
    rows: list[dict[str, Any]]
    ran: int = 0
    reused: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    workers: set[str] = field(default_factory=set)


def trial_dir(sweep_dir: str | Path, trial: Trial) -> Path:
    return Path(sweep_dir) / RUNS_DIR / trial.name


def _finished(folder: Path, trial: Trial) -> str | None:
    """"ok" or "diverged" when ``folder`` holds this trial finished with the same config, else None."""
    from digitnet.runs import read_run_config

    if (folder / "model.safetensors").exists():
        try:
            return "ok" if read_run_config(folder) == trial.config else None
        except DigitnetError:
            return None
    if (folder / FAILED_FILE).exists():
        try:
            saved = json.loads((folder / FAILED_FILE).read_text())
            return "diverged" if TrainConfig.from_dict(saved["config"]) == trial.config else None
        except (DigitnetError, ValueError, KeyError, TypeError):
            return None
    return None


def _write_trial(folder: Path, trial: Trial, outcome: dict[str, Any]) -> None:
    """The trial's run directory from the worker's files, each written atomically, the model last."""
    from digitnet.atomic import write_bytes, write_json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").unlink(missing_ok=True)
    (folder / FAILED_FILE).unlink(missing_ok=True)
    for name in TRIAL_FILES:
        if name in outcome["files"]:
            write_bytes(folder / name, outcome["files"][name])
    if outcome["status"] != "ok":
        write_json(folder / FAILED_FILE, {"status": outcome["status"], "error": outcome["error"],
                                          "config": trial.config.to_dict()})


def _history_numbers(history: dict[str, Any] | None) -> dict[str, Any]:
    vals = [v for v in (history or {}).get("val_accuracy", []) if v is not None]
    return {"best_val_accuracy": max(vals) if vals else None, "final_val_accuracy": vals[-1] if vals else None}


#: ``command(config, out_dir, kernels) -> str | None``: the command line that trains one trial again
#: (the CLI gives :func:`digitnet.cli.cmd_sweep.train_command`; the library knows no command line).
CommandFor = Callable[[TrainConfig, str, str], "str | None"]


def _row(trial: Trial, folder: Path, sweep_dir: Path, outcome: dict[str, Any] | None, kernels: str,
         previous: dict[str, Any] | None, command_for: CommandFor | None = None) -> dict[str, Any]:
    """One line of the results table (from a worker's outcome, or from the trial's files on disk)."""
    status = outcome["status"] if outcome else _finished(folder, trial)
    if outcome is not None:
        metrics, history = outcome["metrics"], outcome["history"]
        seconds, digest, error = outcome["seconds"], outcome["weights_sha256"], outcome["error"]
    else:
        from digitnet.io import read_safetensors

        metrics, digest, error = {}, None, None
        if status == "ok":
            saved = read_safetensors(folder / "model.safetensors")
            metrics = saved.metadata.get("metrics", {})
            digest = weights_digest(saved.tensors)
        else:
            error = json.loads((folder / FAILED_FILE).read_text()).get("error")
        history = json.loads((folder / "history.json").read_text()) if (folder / "history.json").exists() else None
        seconds = (previous or {}).get("seconds", metrics.get("wall_seconds_this_session"))
    relative = folder.relative_to(sweep_dir).as_posix()
    row: dict[str, Any] = {"trial": trial.name}
    row.update({k: v for k, v in trial.settings.items()})
    row.update({"draw": trial.draw, "repeat": trial.repeat, "seed": trial.seed, "status": status,
                "test_accuracy": metrics.get("test_accuracy"), "test_loss": metrics.get("test_loss"),
                **_history_numbers(history), "epochs_run": metrics.get("epochs_run"),
                "seconds": seconds, "train_seconds": metrics.get("train_seconds"),
                "weights_sha256": digest, "error": error, "run_dir": relative,
                "command": command_for(trial.config, f"runs/{trial.name}", kernels) if command_for else None})
    if trial.draw is None:
        row.pop("draw")
    return row


def write_results(sweep_dir: str | Path, rows: list[dict[str, Any]]) -> None:
    """results.json and results.csv (the same rows), each written atomically."""
    from digitnet.atomic import write_json, write_text

    sweep_dir = Path(sweep_dir)
    write_json(sweep_dir / RESULTS_JSON, rows)
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: format_value(v) if isinstance(v, dict | list) else ("" if v is None else v)
                         for k, v in row.items()})
    write_text(sweep_dir / RESULTS_CSV, buffer.getvalue())


def read_results(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``sweep_dir/results.json`` ([] before the first trial finished)."""
    path = Path(sweep_dir) / RESULTS_JSON
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ConfigError(f"{path} is not valid JSON") from None
    if not isinstance(rows, list):
        raise ConfigError(f"{path} is not a list of rows")
    return rows


def read_sweep(sweep_dir: str | Path) -> dict[str, Any]:
    """``sweep_dir/sweep.json``: the sweep's settings (ConfigError if it is not a sweep directory)."""
    return read_json_object(Path(sweep_dir) / SWEEP_FILE, f"{sweep_dir} is not a sweep directory (no {SWEEP_FILE})")


def is_sweep_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / SWEEP_FILE).exists()


def run_sweep(plan: SweepPlan, sweep_dir: str | Path, *, jobs: int = 1, backend: str = "local",
              scheduler: str | None = None, kernels: str | None = None, progress: bool | None = None,
              log: Callable[[str], None] | None = None, command: str | None = None,
              command_for: CommandFor | None = None) -> SweepResult:
    """Run every trial of ``plan`` not already finished in ``sweep_dir``; returns the table.

    Args:
        jobs: local worker processes (1: in this process; -1: one per core).
        backend: "local" (joblib) or "dask" (then ``scheduler`` is the scheduler's address).
        kernels: "fast" or "reference", resolved here (default ``$DIGITNET_KERNELS`` or fast) and
            sent to every worker, so the trials do not depend on a worker's environment.
        progress: a bar over trials (default: when stderr is a terminal); else one line per trial.
        command: the command line that started the sweep, recorded in sweep.json.
        command_for: makes each row's ``command``, the ``digitnet train`` command that trains the trial
            again (``digitnet.cli.cmd_sweep.train_command``; without it the column is empty).

    Raises:
        TrainingInterrupted: on Ctrl-C, after writing every finished trial (exit code 130).
    """
    from digitnet.atomic import write_json
    from digitnet.kernels import resolve

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "dask" and not scheduler:
        raise ConfigError("--backend dask needs --scheduler tcp://HOST:PORT (the address 'dask scheduler' prints)")
    if jobs == 0 or jobs < -1:
        raise ConfigError(f"--jobs must be >= 1 (or -1 for one per core), got {jobs}")
    kernels = resolve(kernels)
    sweep_dir = Path(sweep_dir)
    try:
        (sweep_dir / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create sweep directory {sweep_dir}: {exc.strerror}") from None
    write_json(sweep_dir / SWEEP_FILE, {**plan.to_dict(), "kernels": kernels, "backend": backend,
                                        "jobs": jobs, "scheduler": scheduler, "command": command,
                                        "digitnet_version": __version__})

    previous = {row.get("trial"): row for row in read_results(sweep_dir)}
    rows: dict[str, dict[str, Any]] = {}
    pending: list[Trial] = []
    for trial in plan.trials:
        folder = trial_dir(sweep_dir, trial)
        if _finished(folder, trial):
            rows[trial.name] = _row(trial, folder, sweep_dir, None, kernels, previous.get(trial.name), command_for)
        else:
            pending.append(trial)
    result = SweepResult(sweep_dir, plan, [], reused=len(rows))

    def table() -> list[dict[str, Any]]:
        return [rows[t.name] for t in plan.trials if t.name in rows]

    write_results(sweep_dir, table())
    where = f"Dask scheduler {scheduler}" if backend == "dask" else \
        f"{jobs if jobs > 0 else os.cpu_count()} local worker{'s' if jobs != 1 else ''}"
    log(f"sweep {sweep_dir}: {len(plan.trials)} trials ({len(rows)} already finished, {len(pending)} to run) "
        f"on {where}")
    by_name = {t.name: t for t in pending}
    tasks = [(t.name, t.config.to_dict(), kernels) for t in pending]
    show_bar = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show_bar and pending:
        from tqdm import tqdm

        bar = tqdm(total=len(plan.trials), initial=len(rows), desc="trials", unit="trial", file=sys.stderr,
                   dynamic_ncols=True)
    started = time.perf_counter()
    outcomes = dask_outcomes(tasks, scheduler) if backend == "dask" else local_outcomes(tasks, jobs)
    try:
        for name, outcome in outcomes:
            trial = by_name[name]
            folder = trial_dir(sweep_dir, trial)
            _write_trial(folder, trial, outcome)
            rows[name] = _row(trial, folder, sweep_dir, outcome, kernels, None, command_for)
            write_results(sweep_dir, table())
            result.ran += 1
            result.workers.add(outcome["worker"])
            text = _trial_text(rows[name])
            if bar is not None:
                bar.set_postfix_str(text, refresh=False)
                bar.update(1)
            else:
                log(f"[{len(rows)}/{len(plan.trials)}] {text}")
    except KeyboardInterrupt:
        result.interrupted = True
        raise TrainingInterrupted(f"interrupted: {len(rows)} of {len(plan.trials)} trials are finished and kept "
                                  f"in {sweep_dir}; run the same command again to run the other "
                                  f"{len(plan.trials) - len(rows)}") from None
    finally:
        if bar is not None:
            bar.close()
        close = getattr(outcomes, "close", None)
        if close is not None:
            close()
        result.seconds = time.perf_counter() - started
        result.rows = table()
    return result


def _trial_text(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return f"{row['trial']}: {row['status']}"
    return f"{row['trial']}: test {row['test_accuracy']:.4f} in {row['seconds']:.1f}s"


# ----------------------------------------------------------------------------------------------
# Summaries
# ----------------------------------------------------------------------------------------------
@dataclass
class GroupSummary:
    """The trials of one setting (all seeds): test accuracy mean, standard deviation, min and max."""

    group: str
    settings: dict[str, Any]
    accuracies: list[float]
    failed: int = 0

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies)) if self.accuracies else float("nan")

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies, ddof=1)) if len(self.accuracies) > 1 else 0.0


def group_rows(rows: list[dict[str, Any]], keys: list[str]) -> list[GroupSummary]:
    """Rows grouped by their settings (every key in ``keys``, and the random draw), in table order."""
    groups: dict[str, GroupSummary] = {}
    for row in rows:
        settings = {k: row.get(k) for k in keys}
        label = _group_label(row, keys)
        summary = groups.setdefault(label, GroupSummary(label, settings, []))
        if row.get("status") == "ok" and row.get("test_accuracy") is not None:
            summary.accuracies.append(float(row["test_accuracy"]))
        else:
            summary.failed += 1
    return list(groups.values())


def summary_text(rows: list[dict[str, Any]], keys: list[str], top: int | None = None) -> str:
    """The groups by mean test accuracy, best first: ``mean +- std (min-max, n seeds)``."""
    groups = sorted(group_rows(rows, keys), key=lambda g: -g.mean if g.accuracies else math.inf)
    width = max((len(g.group) for g in groups), default=5)
    lines = [f"{'setting':<{width}}  test accuracy: mean +- std over seeds (min-max)"]
    for g in groups[:top]:
        if g.accuracies:
            text = (f"{g.mean:.4f} +- {g.std:.4f} ({min(g.accuracies):.4f}-{max(g.accuracies):.4f}, "
                    f"{len(g.accuracies)} seed{'s' if len(g.accuracies) != 1 else ''})")
        else:
            text = "no finished trial"
        if g.failed:
            text += f", {g.failed} diverged"
        lines.append(f"{g.group:<{width}}  {text}")
    return "\n".join(lines)




@dataclass
class GroupCurve:
    """One setting's learning curve over its seeds: per epoch the mean, the lowest and the highest."""

    group: str
    settings: dict[str, Any]
    epochs: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]
    seeds: int


def curve_metric(histories: list[dict[str, Any]]) -> str:
    """"val_accuracy" when the trials held out a validation set, else "train_loss"."""
    has_val = any(v is not None for h in histories for v in h.get("val_accuracy", []))
    return "val_accuracy" if has_val else "train_loss"


def read_histories(sweep_dir: str | Path, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """history.json of every finished trial in ``rows``, by trial name (missing files are left out)."""
    histories = {}
    for row in rows:
        path = Path(sweep_dir) / row["run_dir"] / "history.json"
        if row.get("status") == "ok" and path.exists():
            try:
                histories[row["trial"]] = json.loads(path.read_text())
            except json.JSONDecodeError:
                raise ConfigError(f"{path} is not valid JSON") from None
    return histories


def group_curves(rows: list[dict[str, Any]], histories: dict[str, dict[str, Any]], keys: list[str],
                 metric: str) -> list[GroupCurve]:
    """The ``metric`` curve of every group: mean, min and max over its seeds at each epoch."""
    curves = []
    for summary in group_rows(rows, keys):
        members = [r for r in rows if _group_label(r, keys) == summary.group and r["trial"] in histories]
        series = [[v for v in histories[r["trial"]].get(metric, [])] for r in members]
        length = max((len(s) for s in series), default=0)
        epochs, mean, low, high = [], [], [], []
        for e in range(length):
            values = [s[e] for s in series if e < len(s) and s[e] is not None and math.isfinite(s[e])]
            if values:
                epochs.append(e + 1)
                mean.append(float(np.mean(values)))
                low.append(float(min(values)))
                high.append(float(max(values)))
        if epochs:
            curves.append(GroupCurve(summary.group, summary.settings, epochs, mean, low, high, len(series)))
    return curves


def _group_label(row: dict[str, Any], keys: list[str]) -> str:
    label = ", ".join(f"{k}={format_value(row.get(k))}" for k in keys) or "base"
    return f"draw {row['draw']}: {label}" if row.get("draw") is not None else label


__all__ = ["BACKENDS", "GroupCurve", "GroupSummary", "RandomRange", "SweepPlan", "SweepResult", "Trial",
           "curve_metric", "dask_outcomes", "format_value", "group_curves", "group_rows", "is_sweep_dir",
           "local_outcomes", "parse_grid", "parse_random", "parse_setting", "parse_value", "plan_sweep",
           "read_histories", "read_results", "read_sweep", "run_sweep", "run_trial", "summary_text", "sweep_seeds",
           "trial_dir", "weights_digest"]
