"""``digitnet report RUN_DIR``: one self-contained HTML page with every picture, the metrics and the config."""

from __future__ import annotations

from digitnet.cli.common import positive_int


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write report.html: every picture, the test metrics and the configuration of a run (or a sweep)",
        description="Write a self-contained HTML report of a training run (pictures embedded, readable "
        "offline): learning curves, architecture, forward pass, gradients, weights, predictions, "
        "mistakes, confusion matrix, hidden-layer map, robustness, per-class metrics and config.json. "
        "For a sweep directory (digitnet sweep --out DIR): test accuracy against each swept setting with "
        "the spread over seeds, every setting's learning curves, and the results table; the picture is "
        "also written as DIR/sweep.png.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory, sweep directory or .safetensors "
                        "model file")
    parser.add_argument("-o", "--out", metavar="FILE.html", help="output file (default: RUN_DIR/report.html)")
    parser.add_argument("--dataset", choices=["mnist", "fashion-mnist"],
                        help="test images from this dataset (default: the run's)")
    parser.add_argument("--data-dir", metavar="DIR", help="folder with the dataset files")
    parser.add_argument("--index", type=int, default=0, metavar="N",
                        help="test image for the forward-pass pictures (default 0)")
    parser.add_argument("--dpi", type=positive_int, default=90, help="resolution of the pictures (default 90)")
    parser.add_argument("--robustness-count", type=positive_int, default=2000, metavar="N",
                        help="test images damaged for the robustness curves (default 2000; 10000 = all)")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling and noise (default 0)")
    parser.add_argument("--quiet", action="store_true", help="print only the path of the report")
    parser.set_defaults(func=run)


def run(args) -> int:
    import sys

    from digitnet.report import write_report, write_sweep_report
    from digitnet.sweep import is_sweep_dir
    from digitnet.viz import PlotOptions

    if is_sweep_dir(args.run_dir):
        path, picture = write_sweep_report(args.run_dir, args.out, dpi=args.dpi)
        print(f"wrote {path} and {picture}")
        return 0

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    path = write_report(args.run_dir, args.out, dataset=args.dataset, data_dir=args.data_dir, dpi=args.dpi,
                        options=PlotOptions(index=args.index, seed=args.seed),
                        counts={"robustness": args.robustness_count}, log=log)
    print(f"wrote {path}")
    return 0
