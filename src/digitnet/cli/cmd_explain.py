"""``digitnet explain MODEL [--image INDEX | --file PNG]``: one image through the network, step by step.

Prints the forward pass layer by layer (formula, shapes, a few values, statistics), the
probabilities, the loss for the true label, the backward pass (each gradient's formula, shape and
norm) and one SGD step on that image. ``--html PAGE`` writes the same as a self-contained page with
every array drawn as coloured cells. The numbers come from :func:`digitnet.explain.explain_image`,
the text and the page from :mod:`digitnet.viz.explain`; this module only reads the arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from digitnet.cli.common import positive_float, positive_int


def register(subparsers) -> None:
    """Add ``digitnet explain`` to the CLI's sub-commands."""
    parser = subparsers.add_parser(
        "explain",
        help="explain one image step by step: forward pass, loss, backward pass, one SGD step",
        description="Send one image through MODEL and print what happens: every layer's formula, shapes, "
        "values and statistics, the probabilities, the loss for the true label, every gradient of the "
        "backward pass, and how one SGD step on this image changes the loss. The model file is not changed.",
        epilog="examples:\n  digitnet explain runs/mlp --image 7\n  digitnet explain model.safetensors --file "
        "my-digit.png --label 3\n  digitnet explain runs/mlp --image 0 --html explain.html",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="model file (.safetensors) or run directory")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--image", type=int, metavar="INDEX",
                        help="index of a test image of the model's dataset (default 0)")
    source.add_argument("--file", metavar="IMAGE", help="your own image of one digit (PNG, JPEG, ...)")
    parser.add_argument("--label", type=int, metavar="K",
                        help="the true class (default: the test label; for --file the predicted class)")
    parser.add_argument("--lr", type=positive_float, default=0.1, help="learning rate of the SGD step (default 0.1)")
    parser.add_argument("--values", type=positive_int, default=6, metavar="N",
                        help="how many values of each array to print (default 6)")
    parser.add_argument("--dataset", choices=["mnist", "fashion-mnist"],
                        help="dataset of --image (default: the model's)")
    parser.add_argument("--data-dir", metavar="DIR", help="folder with the dataset files")
    parser.add_argument("--html", metavar="PAGE.html", help="also write the explanation as a web page")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Load the model and the image, explain it, print the text (and write the page with ``--html``)."""
    from digitnet.errors import ConfigError
    from digitnet.explain import explain_image
    from digitnet.io import load_model
    from digitnet.viz.explain import format_text, render_html

    loaded = load_model(args.model)
    label = args.label
    if args.file is not None:
        from digitnet.data.images import load_digit

        image = load_digit(args.file)
        source = f"{args.file}"
    else:
        from digitnet.data.datasets import load_dataset

        index = 0 if args.image is None else args.image
        dataset = args.dataset or loaded.dataset or loaded.training.get("dataset") or "mnist"
        test = load_dataset(dataset, split="test", data_dir=args.data_dir or loaded.training.get("data_dir"))
        if not 0 <= index < len(test):
            raise ConfigError(f"--image {index} is outside the {dataset} test set (0-{len(test) - 1})")
        image = test.images[index]
        if label is None and test.labels is not None:
            label = int(test.labels[index])
        source = f"test image {index} of {dataset}"
    explanation = explain_image(loaded.model, image, label, lr=args.lr, classes=loaded.classes,
                                training=loaded.training)
    title = f"{source} through {loaded.path}"
    print(format_text(explanation, title, values=args.values))
    if args.html:
        from digitnet.atomic import write_text

        out = Path(args.html)
        write_text(out, render_html(explanation, title, summary=loaded.model.summary()))
        print(f"\nwrote {out}")
    return 0
