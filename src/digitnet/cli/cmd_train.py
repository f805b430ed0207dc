"""``digitnet train``: train a network from a preset and/or flags, write a run directory."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from digitnet.cli.common import fraction, non_negative_float, positive_float, positive_int

DEFAULT_PRESET = "mlp-fast"

# flag dest -> TrainConfig field, for the flags that map one to one
_FIELDS = {
    "arch": "arch", "activation": "activation", "init": "init", "dropout": "dropout", "loss": "loss",
    "label_smoothing": "label_smoothing", "optimizer": "optimizer", "lr": "lr", "momentum": "momentum",
    "l2": "weight_decay", "epochs": "epochs", "batch_size": "batch_size", "schedule": "schedule",
    "warmup": "warmup_epochs", "clip_norm": "clip_norm", "val_split": "val_split", "seed": "seed",
    "dataset": "dataset", "data_dir": "data_dir", "limit_train": "limit_train",
    "early_stopping": "early_stopping", "checkpoint_every": "checkpoint_every",
    "on_divergence": "on_divergence", "loss_reduction": "loss_reduction",
}


def choices(field: str) -> list[str]:
    """The allowed values of a TrainConfig field, from its one constraint (names come from the registry)."""
    from digitnet.config import CONSTRAINTS

    return list(CONSTRAINTS[field].allowed())


def formulas(kind: str, tag: str | None = None) -> str:
    """``name: formula`` for every registered ``kind``, one per line, for the help's epilog."""
    from digitnet.nn.registry import entries

    return "\n".join(f"  {e.name}: {e.formula}" for e in entries(kind, tag))


def register(subparsers) -> None:
    from digitnet.config import preset_help

    parser = subparsers.add_parser(
        "train",
        help="train a network on MNIST (or Fashion-MNIST) and save a run directory",
        description="Train a network and write RUN_DIR with model.safetensors, history.json and "
        "config.json. Start from a preset and override any setting with a flag. With no "
        f"arguments it trains the '{DEFAULT_PRESET}' preset and prints the test accuracy.",
        epilog="presets:\n" + preset_help() + "\n\nhidden activations:\n" + formulas("activation", "hidden")
        + "\n\noptimizers:\n" + formulas("optimizer"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p = parser.add_argument
    p("--preset", metavar="NAME", help=f"start from a named preset (default: {DEFAULT_PRESET} unless "
      "--arch is given; see the list below)")
    p("--arch", metavar="SIZES", help="layer sizes of an MLP, e.g. 784-128-64-10")
    p("--activation", choices=choices("activation"), help="hidden activation (formulas below)")
    p("--init", choices=choices("init"), help="weight initialisation (default: the activation's own: he "
      "for the ReLU family and GELU, xavier for sigmoid/tanh)")
    p("--dropout", type=fraction, metavar="P", help="dropout rate after each hidden layer, in [0, 1)")
    p("--loss", choices=choices("loss"), help="loss function")
    p("--loss-reduction", choices=choices("loss_reduction"),
      help="mean (default): average the batch's losses; sum: add them up, so gradients are B times larger "
      "(SGD on the sum at lr equals the mean at lr * B)")
    p("--label-smoothing", type=fraction, metavar="EPS", help="label smoothing for cross-entropy")
    p("--optimizer", choices=choices("optimizer"), help="optimizer (formulas below)")
    p("--lr", type=positive_float, metavar="RATE", help="(peak) learning rate")
    p("--momentum", type=fraction, metavar="M", help="momentum for sgd/momentum/nesterov")
    p("--l2", type=non_negative_float, metavar="WD", help="L2 penalty / weight decay on weight matrices")
    p("--epochs", type=positive_int, metavar="N", help="passes over the training set")
    p("--batch-size", type=int, metavar="B", help="samples per step; 0 = full batch")
    p("--schedule", choices=choices("schedule"), help="learning-rate schedule")
    p("--warmup", type=non_negative_float, metavar="EPOCHS", help="linear learning-rate warm-up, in epochs")
    p("--clip-norm", type=non_negative_float, metavar="N", help="clip the global gradient norm (0 = off)")
    p("--val-split", type=fraction, metavar="F", help="fraction of training images held out for validation")
    p("--early-stopping", type=int, metavar="PATIENCE",
      help="stop after PATIENCE epochs without val-loss improvement, restoring the best weights")
    p("--seed", type=int, help="random seed: same seed, same weights, bit for bit")
    p("--dataset", choices=["mnist", "fashion-mnist"], help="dataset (default mnist)")
    p("--data-dir", metavar="DIR", help="folder with the dataset files (default: search, then download)")
    p("--limit-train", type=positive_int, metavar="N", help="train on the first N training images only")
    p("--checkpoint-every", type=positive_int, metavar="N",
      help="write a resumable checkpoint every N epochs")
    p("--on-divergence", choices=choices("on_divergence"),
      help="on a NaN/inf loss: stop (exit 3) or restore the epoch start and divide the lr by 10")
    p("--out", metavar="RUN_DIR", help="run directory (default: runs/<preset>-<date>-<time>)")
    p("--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoint")
    p("--report", action="store_true", help="write RUN_DIR/report.html with every picture at the end")
    p("--no-progress", action="store_true", help="no progress bar (one line per epoch instead)")
    p("--kernels", choices=["fast", "reference"],
      help="reference: the readable textbook layers in digitnet/nn; fast: the tuned kernels (default, or "
      "$DIGITNET_KERNELS)")
    p("--threads", type=positive_int, metavar="N",
      help="threads the kernels run on (default: $DIGITNET_THREADS, else every core); the weights are the "
      "same for any N")
    parser.set_defaults(func=run)


def resolve_config(args):
    """The TrainConfig the flags ask for: preset (or defaults) with every given flag applied."""
    from digitnet.config import TrainConfig, load_preset

    if args.preset:
        base = load_preset(args.preset)
    elif args.arch:
        base = TrainConfig()
    else:
        base = load_preset(DEFAULT_PRESET)
    changes = {field: getattr(args, dest) for dest, field in _FIELDS.items()}
    if args.arch:
        changes["layers"] = None
    return base.replace(**{k: v for k, v in changes.items() if v is not None})


def run(args) -> int:
    from digitnet.errors import ConfigError
    from digitnet.runs import resume_training, run_training

    if args.resume:
        given = [dest for dest in [*_FIELDS, "preset"] if getattr(args, dest) is not None]
        if given:
            raise ConfigError(f"--resume continues a run with its own settings; drop {', '.join(given)}")
        result = resume_training(args.resume, progress=not args.no_progress, handle_signals=True,
                                 kernels=args.kernels, threads=args.threads)
    else:
        config = resolve_config(args)
        if args.batch_size is not None and args.batch_size < 0:
            raise ConfigError("--batch-size must be >= 0")
        out = Path(args.out) if args.out else Path("runs") / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        result = run_training(config, out, progress=not args.no_progress, handle_signals=True,
                              kernels=args.kernels, threads=args.threads)
    m = result.metrics
    print(f"test accuracy: {m['test_accuracy'] * 100:.2f}% (loss {m['test_loss']:.4f}) on "
          f"{m['test_count']:,} test images; training took {m['train_seconds']:.1f} s")
    print(f"saved: {result.run_dir / 'model.safetensors'}")
    if args.report:
        from digitnet.report import write_report

        path = write_report(result.run_dir, log=lambda message: print(message, file=sys.stderr, flush=True))
        print(f"report: {path}")
    return 0
