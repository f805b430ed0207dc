"""``digitnet plot KIND MODEL_OR_RUN_DIR -o file.png``: draw one picture of a model or a training run."""

from __future__ import annotations

import argparse

from digitnet.cli.common import positive_int


def _kinds_help() -> str:
    from digitnet.viz import KINDS
    from digitnet.viz.kinds import SWEEP_KINDS

    needs_text = {"history": "run dir", "initial": "run dir", "cnn": "CNN", "dense-input": "MLP"}
    lines = ["pictures (KIND):"]
    for kind in KINDS.values():
        needs = sorted({needs_text[n] for n in kind.needs if n in needs_text})
        note = f" [needs: {', '.join(needs)}]" if needs else ""
        lines.append(f"  {kind.name:<18} {kind.description}{note}")
    for kind in SWEEP_KINDS.values():
        lines.append(f"  {kind.name:<18} {kind.description} [needs: a sweep dir]")
    lines += ["", "'run dir' pictures need the folder written by 'digitnet train --out RUN_DIR' (history.json, "
              "initial.safetensors);", "the others also work with a single .safetensors model file.",
              "", "examples:", "  digitnet plot confusion runs/mlp -o confusion.png",
              "  digitnet plot sweep sweeps/opt -o sweep.png",
              "  digitnet plot forward runs/mlp --index 7 -o forward.png",
              "  digitnet plot weight-change runs/mlp --layer 2 -o layer2.png"]
    return "\n".join(lines)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="draw one picture of a model or a run (architecture, curves, confusion, ...) as a PNG",
        description="Draw one picture of a trained model (a .safetensors file) or a training run "
        "(a run directory) and save it as a PNG. Pictures of test images use the test split of the "
        "dataset the model was trained on.",
        epilog=_kinds_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from digitnet.viz import KINDS
    from digitnet.viz.kinds import SWEEP_KINDS

    parser.add_argument("kind", metavar="KIND", choices=[*KINDS, *SWEEP_KINDS], help="which picture (listed below)")
    parser.add_argument("source", metavar="MODEL_OR_RUN_DIR",
                        help="run directory or .safetensors model file (a sweep directory for 'sweep')")
    parser.add_argument("-o", "--out", metavar="FILE.png", help="output file (default: KIND.png)")
    parser.add_argument("--dataset", choices=["mnist", "fashion-mnist"],
                        help="test images from this dataset (default: the model's)")
    parser.add_argument("--data-dir", metavar="DIR", help="folder with the dataset files")
    parser.add_argument("--index", type=int, default=0, metavar="N",
                        help="test image to show (forward, feature-maps, robustness) or the first one "
                        "(predictions); default 0")
    parser.add_argument("--layer", type=int, metavar="L", help="layer index for weight-change (default: the first "
                        "layer with weights; see 'digitnet plot architecture')")
    parser.add_argument("--count", type=positive_int, metavar="N",
                        help="how many images / units / points / channels (each picture has its own default)")
    parser.add_argument("--dpi", type=positive_int, default=100, help="resolution (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling and noise (default 0)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from digitnet.errors import ConfigError
    from digitnet.sweep import is_sweep_dir
    from digitnet.viz import PlotOptions, PlotSource, png_size, render, save_png
    from digitnet.viz.kinds import SWEEP_KINDS

    if args.kind in SWEEP_KINDS:
        if not is_sweep_dir(args.source):
            raise ConfigError(f"{args.source} is not a sweep directory (written by 'digitnet sweep --out DIR')")
        fig = SWEEP_KINDS[args.kind].render(args.source)
    else:
        source = PlotSource.open(args.source, dataset=args.dataset, data_dir=args.data_dir)
        options = PlotOptions(index=args.index, layer=args.layer, count=args.count, seed=args.seed)
        fig = render(args.kind, source, options)
    out = Path(args.out) if args.out else Path(f"{args.kind}.png")
    if out.suffix.lower() != ".png":
        out = out.with_suffix(out.suffix + ".png") if out.suffix else out.with_suffix(".png")
    save_png(fig, out, dpi=args.dpi)
    width, height = png_size(fig, args.dpi)
    print(f"wrote {out} ({width}x{height})")
    return 0
