"""``digitnet sweep``: a grid or random search over train settings and seeds, locally or on a Dask cluster."""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
import sys

from digitnet.cli.common import positive_int

EPILOG = """\
settings: any TrainConfig field (the names of 'digitnet train' flags, with _ for -, and weight_decay for
--l2, warmup_epochs for --warmup): lr, optimizer, momentum, weight_decay, batch_size, epochs, arch,
activation, dropout, schedule, warmup_epochs, label_smoothing, val_split, limit_train, ...
Values are checked as 'digitnet train' checks them (optimizer=lion fails at once, naming the choices).

examples:
  digitnet sweep --preset seed-002 --grid optimizer=sgd,momentum,adam --grid lr=0.01,0.05,0.1 \\
      --seeds 3 --jobs 2 --out sweeps/opt
  digitnet sweep --preset seed-002 --random lr=0.001:0.3:log --random batch_size=32:256 --trials 20 \\
      --out sweeps/random
  digitnet sweep ... --backend dask --scheduler tcp://scheduler-host:8786      # trials on a Dask cluster
  digitnet report sweeps/opt                                           # the pictures and the table

The sweep directory holds sweep.json (the settings), results.csv and results.json (one row per trial:
settings, seed, test accuracy, best validation accuracy, seconds, the 'digitnet train' command that
trains it again bit for bit) and runs/<trial>/, an ordinary run directory per trial. Ctrl-C keeps the
finished trials; the same command again runs only the others. Details: docs/SWEEP.md.
"""


def register(subparsers) -> None:
    from digitnet.cli.cmd_train import DEFAULT_PRESET
    from digitnet.config import preset_help

    parser = subparsers.add_parser(
        "sweep",
        help="train many runs: a grid or random search over settings and seeds, in parallel",
        description="Train every combination of the --grid values (and --trials random draws of the --random "
        "ranges), each with --seeds seeds, as run directories under --out, and write a results table. "
        f"Settings not swept come from --preset (default {DEFAULT_PRESET}) and --set.",
        epilog=EPILOG + "\npresets:\n" + preset_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p = parser.add_argument
    p("--preset", metavar="NAME", help=f"the settings every trial starts from (default {DEFAULT_PRESET})")
    p("--set", action="append", default=[], metavar="KEY=VALUE", help="change a setting of every trial "
      "(repeatable), e.g. --set batch_size=64")
    p("--epochs", type=positive_int, metavar="N", help="shorthand for --set epochs=N")
    p("--limit-train", type=positive_int, metavar="N", help="shorthand for --set limit_train=N")
    p("--val-split", type=float, metavar="F", help="shorthand for --set val_split=F (validation curves, "
      "best validation accuracy)")
    p("--grid", action="append", default=[], metavar="KEY=V1,V2,...", help="try each value (repeatable: "
      "every combination is tried)")
    p("--random", action="append", default=[], metavar="KEY=LOW:HIGH[:log]",
      help="draw a numeric setting at random, uniformly or on a log scale (repeatable; needs --trials)")
    p("--trials", type=positive_int, default=0, metavar="N", help="how many random draws (the random "
      "search's budget); crossed with the grid")
    p("--seeds", type=positive_int, default=1, metavar="N", help="train every setting with N seeds (default 1)")
    p("--sweep-seed", type=int, default=0, metavar="S", help="the SeedSequence every seed and random draw "
      "comes from (default 0)")
    p("--out", required=True, metavar="SWEEP_DIR", help="sweep directory (run the same command again to "
      "finish an interrupted sweep)")
    p("--jobs", type=int, default=1, metavar="N", help="local worker processes, one BLAS thread each "
      "(default 1; -1 = one per core)")
    p("--backend", choices=["local", "dask"], default="local",
      help="local: joblib's process pool (default); dask: a Dask cluster (pip install 'digitnet[dask]')")
    p("--scheduler", metavar="tcp://HOST:PORT", help="the Dask scheduler's address (with --backend dask)")
    p("--kernels", choices=["fast", "reference"], help="how every trial computes (default fast, or "
      "$DIGITNET_KERNELS); sent to the workers")
    p("--dry-run", action="store_true", help="list the trials and stop")
    p("--no-progress", action="store_true", help="one line per finished trial instead of a progress bar")
    parser.set_defaults(func=run)


def base_config(args):
    """The TrainConfig every trial starts from: the preset with --set and the shorthands applied."""
    from digitnet.cli.cmd_train import DEFAULT_PRESET
    from digitnet.config import TrainConfig, load_preset
    from digitnet.sweep import parse_setting, parse_value

    base = load_preset(args.preset or DEFAULT_PRESET)
    changes = dict(parse_setting(item) for item in args.set)
    for key in ("epochs", "limit_train", "val_split"):
        if getattr(args, key) is not None:
            changes[key] = parse_value(key, str(getattr(args, key)))
    if "arch" in changes and "layers" not in changes:
        changes["layers"] = None  # an MLP given by its sizes replaces a preset's explicit layers
    return TrainConfig.from_dict({**base.to_dict(), **changes})


def train_command(config, out: str, kernels: str) -> str | None:
    """The ``digitnet train`` command that trains ``config`` again, bit for bit, or None if flags cannot
    say it (a setting without a flag): checked by parsing it with the real parser."""
    from digitnet.cli import build_parser
    from digitnet.cli.cmd_train import _FIELDS, resolve_config
    from digitnet.config import TrainConfig, load_preset
    from digitnet.errors import DigitnetError
    from digitnet.sweep import format_value

    start = load_preset(config.preset) if config.preset else TrainConfig()
    args = ["train"] + (["--preset", config.preset] if config.preset else ["--arch", str(config.arch)])
    for dest, name in _FIELDS.items():
        value = getattr(config, name)
        if name == "seed":
            continue
        if value != getattr(start, name) and value is not None:
            args += ["--" + dest.replace("_", "-"), format_value(value)]
    args += ["--seed", str(config.seed), "--kernels", kernels, "--out", out]
    if kernels == "reference":      # the textbook layers' BLAS thread count can change the last bits
        args += ["--threads", "1"]
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            parsed = build_parser().parse_args(args)
        if resolve_config(parsed) != config:
            return None
    except (SystemExit, DigitnetError):
        return None
    return "OPENBLAS_NUM_THREADS=1 digitnet " + shlex.join(args)


def run(args) -> int:
    from digitnet.sweep import parse_grid, parse_random, plan_sweep, run_sweep, summary_text

    plan = plan_sweep(base_config(args), parse_grid(args.grid), parse_random(args.random), trials=args.trials,
                      seeds=args.seeds, sweep_seed=args.sweep_seed)
    if args.dry_run:
        print(f"{len(plan.trials)} trials (seeds {', '.join(map(str, plan.seeds))}):")
        for trial in plan.trials:
            print(f"  {trial.name}: {trial.group or 'base'}, seed {trial.seed}")
        return 0
    command = "digitnet " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["sweep"] else None
    result = run_sweep(plan, args.out, jobs=args.jobs, backend=args.backend, scheduler=args.scheduler,
                       kernels=args.kernels, progress=False if args.no_progress else None, command=command,
                       command_for=train_command)
    print(summary_text(result.rows, plan.keys))
    failed = sum(row["status"] != "ok" for row in result.rows)
    workers = len(result.workers)
    print(f"{result.ran} trials trained in {result.seconds:.1f} s"
          + (f" on {workers} worker{'s' if workers != 1 else ''}" if workers else "")
          + (f", {result.reused} finished before" if result.reused else "")
          + (f"; {failed} diverged" if failed else "")
          + f"; results: {args.out}/results.csv; pictures: digitnet report {args.out}")
    return 0
