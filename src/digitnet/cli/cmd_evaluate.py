"""``digitnet evaluate``: accuracy, loss, per-class metrics and the confusion matrix of a model."""

from __future__ import annotations

import numpy as np

from digitnet.cli.common import fraction, non_negative_float, print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="measure a model on a test set: accuracy, loss, per-class metrics, confusion matrix",
        description="Evaluate MODEL (a .safetensors file or a run directory) on a dataset split or on a "
        "labelled file (IDX images+labels, Kaggle/mnist CSV or npz). Optional damage flags measure "
        "robustness: the same numbers on noisy, rotated or thickened/thinned digits.",
    )
    parser.add_argument("model", metavar="MODEL", help="model file or run directory")
    parser.add_argument("--dataset", choices=["mnist", "fashion-mnist"],
                        help="dataset (default: the one the model was trained on)")
    parser.add_argument("--split", choices=["test", "train"], default="test",
                        help="which split (default test)")
    parser.add_argument("--data-dir", metavar="DIR", help="folder with the dataset files")
    parser.add_argument("--file", metavar="FILE", help="evaluate on a labelled data file instead")
    parser.add_argument("--noise", type=non_negative_float, default=0.0, metavar="S",
                        help="add Gaussian noise of std S (in units of full intensity, e.g. 0.3)")
    parser.add_argument("--rotate", type=float, default=0.0, metavar="DEG", help="rotate every digit by DEG")
    parser.add_argument("--thickness", type=int, default=0, metavar="K",
                        help="thicken strokes by K dilation steps (K < 0: thin by -K erosion steps), "
                        "each ~1 px per side")
    parser.add_argument("--min-confidence", type=fraction, default=0.0, metavar="P",
                        help="answer 'not sure' below confidence P; report coverage and accuracy on the rest")
    parser.add_argument("--seed", type=int, default=0, help="seed for the noise")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.set_defaults(func=run)


def load_eval_data(args, loaded):
    """The labelled Dataset the flags name."""
    from digitnet.errors import DataError

    if args.file:
        from digitnet.data.formats import load_file

        data = load_file(args.file)
    else:
        from digitnet.data.datasets import load_dataset

        name = args.dataset or loaded.dataset or "mnist"
        data = load_dataset(name, split=args.split, data_dir=args.data_dir)
    if data.labels is None:
        raise DataError(f"{data.name} has no labels: use 'digitnet predict' or 'digitnet submit' for it")
    return data


def format_report(report) -> str:
    classes = report["classes"]
    lines = [f"model: {report['model']}", f"data:  {report['data']} ({report['count']:,} images)"]
    damage = {k: v for k, v in report["damage"].items() if v}
    if damage:
        lines.append("damage: " + ", ".join(f"{k}={v}" for k, v in damage.items()))
    lines.append(f"accuracy: {report['accuracy'] * 100:.2f}%   loss (cross-entropy): {report['loss']:.4f}")
    if "min_confidence" in report:
        mc = report["min_confidence"]
        acc = "n/a" if mc["accuracy_on_covered"] is None else f"{mc['accuracy_on_covered'] * 100:.2f}%"
        lines.append(f"confidence >= {mc['threshold']}: answers {mc['coverage'] * 100:.1f}% "
                     f"({mc['not_sure']:,} 'not sure'), accuracy on those answered {acc}")
    width = max(5, max(len(c) for c in classes))
    lines += ["", f"{'class':<{width}}  precision  recall     f1  support"]
    for row in report["per_class"]:
        lines.append(f"{row['class']:<{width}}  {row['precision']:9.4f} {row['recall']:7.4f} "
                     f"{row['f1']:6.4f} {row['support']:8,}")
    macro = report["macro_avg"]
    lines.append(f"{'macro':<{width}}  {macro['precision']:9.4f} {macro['recall']:7.4f} {macro['f1']:6.4f} "
                 f"{report['count']:8,}")
    matrix = np.array(report["confusion_matrix"])
    cell = max(5, len(str(matrix.max())) + 1)
    short = [c[:cell - 1] for c in classes]
    lines += ["", "confusion matrix (rows: true class, columns: predicted)",
              " " * (width + 1) + "".join(f"{s:>{cell}}" for s in short)]
    for name, row in zip(classes, matrix, strict=True):
        lines.append(f"{name:<{width}} " + "".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)


def run(args) -> int:
    from digitnet.evaluation import evaluate_model
    from digitnet.io import load_model

    loaded = load_model(args.model)
    data = load_eval_data(args, loaded)
    report = evaluate_model(loaded, data, noise=args.noise, rotate=args.rotate, thickness=args.thickness,
                            min_confidence=args.min_confidence, seed=args.seed)
    if args.json:
        print_json(report)
    else:
        print(format_report(report))
    return 0
