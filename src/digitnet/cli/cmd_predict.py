"""``digitnet predict``: read digits from data files (IDX/CSV/npz) or from your own images."""

from __future__ import annotations

import sys
from pathlib import Path

from digitnet.cli.common import positive_int, print_json
from digitnet.errors import ImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict the digit of images or of every image in a data file",
        description="Predict with MODEL (a .safetensors file or a run directory). Each INPUT is a data file "
        "(IDX, Kaggle/mnist CSV or Keras npz: every image in it is predicted), an image (PNG, JPEG, BMP, "
        "GIF, WebP: preprocessed the MNIST way), a folder of images or a glob such as 'digits/*.png'. "
        "An image that cannot be read (not an image, corrupt, no ink) is reported on stderr (in --json "
        "also as a row with an 'error') and the others are still predicted; the exit code is then 2.",
    )
    parser.add_argument("model", metavar="MODEL", help="model file or run directory")
    parser.add_argument("inputs", metavar="INPUT", nargs="+", help="data file, image, folder or glob")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per line: input, index, label, class, confidence, top3")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="at most N images per data file")
    parser.add_argument("--digits", action="store_true",
                        help="an image holds a row of digits (a written number): read the whole number")
    parser.add_argument("--show", metavar="OUT.png",
                        help="save a picture of each image, what the network sees, and the probabilities "
                        "(images that could not be read are marked in red)")
    parser.set_defaults(func=run)


def _is_image_input(text: str) -> bool:
    path = Path(text)
    if any(ch in text for ch in "*?[") and not path.exists():
        return True  # a glob: expanded by the image loader
    return path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES


def _print_rows(rows, as_json: bool) -> None:
    for row in rows:
        if as_json:
            print_json(row)
            continue
        if "number" in row:  # --digits: a number has no top-3 of its own
            print(f"{row['input']}: number {row['number']}  (digits: " + ", ".join(
                f"{d['class']} {d['confidence'] * 100:.0f}%" for d in row["digits"]) + ")")
            continue
        where = row["input"] + (f"[{row['index']}]" if "index" in row else "")
        tops = ", ".join(f"{t['class']} {t['probability'] * 100:.1f}%" for t in row["top3"])
        print(f"{where}: {row['class']} ({row['confidence'] * 100:.1f}%)  top-3: {tops}")


def run(args) -> int:
    from digitnet.errors import ConfigError
    from digitnet.io import load_model
    from digitnet.predict import describe_predictions, predict_proba_images

    loaded = load_model(args.model)
    image_inputs = [text for text in args.inputs if _is_image_input(text)]
    data_inputs = [text for text in args.inputs if text not in image_inputs]
    if (args.digits or args.show) and data_inputs and not image_inputs:
        raise ConfigError("--digits and --show apply to image files, not to data files")

    for text in data_inputs:
        from digitnet.data.formats import load_file

        data = load_file(text)
        images = data.images[:args.limit] if args.limit else data.images
        probs = predict_proba_images(loaded.model, images)
        rows = [{"input": text, "index": i, **row}
                for i, row in enumerate(describe_predictions(probs, loaded.classes))]
        _print_rows(rows, args.json)

    if image_inputs:
        return _predict_images(loaded, image_inputs, args)
    return 0


def _predict_images(loaded, inputs: list[str], args) -> int:
    """Predict every image, printing each row as it comes; an image that cannot be read is one line
    on stderr (and a row with an ``error`` in --json) and the others go on. Exit code 2 if any failed."""
    from digitnet.handwriting import iter_predictions, results_to_json, save_show_png

    shown, failed, total = [], 0, 0
    for row in iter_predictions(loaded, inputs, digits=args.digits, on_error="record"):
        total += 1
        if args.show:
            shown.append(row)
        if "error" in row:
            failed += 1
            print(f"digitnet predict: error: {row['error']}", file=sys.stderr, flush=True)
            if args.json:
                print_json(row)
            continue
        _print_rows(results_to_json([row]), args.json)
    if args.show:
        save_show_png(shown, args.show)
        if not args.json:
            print(f"saved: {args.show}")
    if failed:
        if total > 1:
            print(f"digitnet predict: {failed} of {total} images could not be read", file=sys.stderr)
        return ImageError.exit_code
    return 0
