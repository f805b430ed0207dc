"""Read your own handwriting with a trained model: image files in, labels and pictures out.

This glues :mod:`digitnet.data.images` (any image -> MNIST-style uint8 ``[28, 28]``) to a model:
the 28x28 digits become the model's inputs with ``images_to_inputs`` (``x / 255`` as float32, in
the model's layout) and ``model.predict_proba`` gives the class probabilities ``[N, K]``. No math
of its own. ``digitnet predict MODEL photo.jpg [--digits] [--show out.png] [--json]`` and the
draw-a-digit web page both use it.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from digitnet.data.batches import images_to_inputs
from digitnet.data.images import as_gray, expand_image_paths, preprocess, split_digits
from digitnet.errors import ConfigError, ImageError

#: side of the thumbnail of the original image kept in each result (for --show)
THUMBNAIL_SIDE = 160
#: how --show marks an image that could not be read
FAILED_COLOUR = "#c53030"


def _parts(loaded) -> tuple[Any, list[str]]:
    """``(model, classes)`` of a LoadedModel, or of a bare Sequential (digit class names)."""
    model = getattr(loaded, "model", loaded)
    classes = getattr(loaded, "classes", None) or [str(d) for d in range(model.output_shapes()[-1][0])]
    return model, list(classes)


def classify(loaded, images: np.ndarray) -> np.ndarray:
    """Class probabilities float32 ``[N, K]`` of uint8 images ``[N, 28, 28]`` (white on black)."""
    model, _ = _parts(loaded)
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim == 2:
        images = images[None]
    return model.predict_proba(images_to_inputs(images, model.input_shape))


def describe(probabilities: np.ndarray, classes: list[str], top: int = 3) -> dict[str, Any]:
    """One image's probabilities ``[K]`` -> ``label, class, confidence, top3, probabilities``.

    The same keys as :func:`digitnet.predict.describe_predictions` (``top3`` holds the ``top``
    most likely as ``{label, class, probability}``), plus every class's probability.
    """
    order = np.argsort(-probabilities, kind="stable")
    label = int(order[0])
    return {
        "label": label,
        "class": classes[label],
        "confidence": float(probabilities[label]),
        "top3": [{"label": int(k), "class": classes[int(k)], "probability": float(probabilities[k])}
                 for k in order[:top]],
        "probabilities": [float(p) for p in probabilities],
    }


def join_labels(names: list[str]) -> str:
    """Digit names join into a number ("4096"); longer names (garments) with spaces."""
    return "".join(names) if all(len(name) == 1 for name in names) else " ".join(names)


def read_number(loaded, image) -> tuple[str, np.ndarray]:
    """Read a row of digits: ``("4096", probabilities float32 [n_digits, K])``.

    ``image`` is anything :func:`digitnet.data.images.split_digits` accepts (path, bytes, array).
    """
    digits = split_digits(image)
    _, classes = _parts(loaded)
    probabilities = classify(loaded, np.stack(digits))
    return join_labels([classes[int(k)] for k in probabilities.argmax(axis=1)]), probabilities


def _thumbnail(gray: np.ndarray) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(gray)
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


def predict_image(loaded, source, *, digits: bool = False, top: int = 3) -> dict[str, Any]:
    """Predict one image (path, bytes or array); the row keeps its images (see :func:`predict_images`)."""
    _, classes = _parts(loaded)
    name = str(source) if isinstance(source, (str, os.PathLike)) else "<image>"
    gray = as_gray(source)  # decodes files (ImageError names the file), reduces big photos
    try:
        parts = split_digits(gray) if digits else [preprocess(gray)]
    except ImageError as exc:
        if name == "<image>":
            raise
        raise ImageError(f"{name}: {exc}") from None
    probabilities = classify(loaded, np.stack(parts))
    row: dict[str, Any] = {"input": name}
    if digits:
        per_digit = [dict(describe(p, classes, top), image=image)
                     for p, image in zip(probabilities, parts, strict=True)]
        row["number"] = join_labels([d["class"] for d in per_digit])
        # the chance that every digit is right, if the digits' errors were independent
        row["confidence"] = float(np.prod([d["confidence"] for d in per_digit]))
        row["digits"] = per_digit
    else:
        row.update(describe(probabilities[0], classes, top))
        row["image"] = parts[0]
    row["original"] = _thumbnail(gray)
    row["classes"] = classes
    return row


def _expand(sources) -> list[tuple[str, Path | None, str | None]]:
    """Each file named by the sources as ``(input, path, None)``; a source that names no image
    (missing, an empty folder, a glob that matches nothing) as ``(source, None, message)``."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    items: list[tuple[str, Path | None, str | None]] = []
    for source in sources:
        try:
            items.extend((str(path), path, None) for path in expand_image_paths(source))
        except ImageError as exc:
            items.append((str(source), None, str(exc)))
    return items


def iter_predictions(loaded, sources, *, digits: bool = False, top: int = 3,
                     on_error: str | None = None) -> Iterator[dict[str, Any]]:
    """Predict image files one by one, as :func:`predict_images` does, yielding each row (with its
    images) as soon as it is ready; ``digitnet predict`` prints them as they come."""
    if on_error not in (None, "raise", "record"):
        raise ConfigError(f"on_error must be 'raise' or 'record', got {on_error!r}")
    items = _expand(sources)
    keep_going = on_error == "record" or (on_error is None and len(items) > 1)
    for name, path, error in items:
        if error is None:
            try:
                yield predict_image(loaded, path, digits=digits, top=top)
                continue
            except ImageError as exc:
                error = str(exc)
        if not keep_going:
            raise ImageError(error)
        yield {"input": name, "error": error}


def predict_images(loaded, sources, *, digits: bool = False, top: int = 3, on_error: str | None = None,
                   show: str | os.PathLike | None = None, keep_images: bool = False) -> list[dict[str, Any]]:
    """Predict image files named by paths, folders or globs (see ``expand_image_paths``).

    Args:
        loaded: a :class:`~digitnet.io.LoadedModel` (class names from its file) or a Sequential.
        sources: a path, folder, glob, or a list of them.
        digits: read each image as a row of digits (a number) instead of one digit.
        top: how many of the most likely classes ``top3`` lists.
        on_error: what an image that cannot be read (not an image, corrupt, no ink, a path that
            names no image) does. "record": its row is ``{"input", "error"}`` and the others are
            still predicted; "raise": it raises ImageError. The default (None) keeps going when
            the sources name more than one file and raises for a single file.
        show: also save a picture of the results there (:func:`save_show_png`); failed images
            are marked in it.
        keep_images: keep the numpy images in the rows (``image``, ``original``, ``classes``).

    Returns:
        One JSON-ready dict per file, in order. One digit: ``input, label, class, confidence,
        top3`` (a list of ``{label, class, probability}``) and ``probabilities`` (K floats). With
        ``digits``: ``input, number, confidence`` (the product of the digits' confidences) and
        ``digits`` (the one-digit fields of each digit, left to right). A file that could not be
        read: ``input, error`` (the message says why). With ``keep_images`` also ``image`` (uint8
        ``[28, 28]``: what the network saw, per digit with ``digits``), ``original`` (a grayscale
        thumbnail) and ``classes``.

    Raises:
        ImageError: an image that cannot be read, when not keeping going (see ``on_error``).
    """
    rows = list(iter_predictions(loaded, sources, digits=digits, top=top, on_error=on_error))
    if show is not None:
        save_show_png(rows, show)
    return rows if keep_images else results_to_json(rows)


def results_to_json(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows without their image arrays and class list: plain JSON-serialisable dicts."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k not in ("image", "original", "classes")}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return [clean(result) for result in results]


def save_show_png(results: list[dict[str, Any]], path: str | os.PathLike, *, max_rows: int = 12) -> Path:
    """Draw each row: the original image, what the network saw (28x28), the probabilities.

    ``results`` are rows of :func:`predict_image` (or ``predict_images(..., keep_images=True)``).
    For a number (``digits=True``) the row shows each digit's 28x28 with its reading. Results with
    an ``error`` are marked in red ("not read") with the message. At most ``max_rows`` rows (the
    title says how many there were and how many failed); written atomically as PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from digitnet.atomic import atomic_open

    shown = results[:max_rows]
    if not shown:
        raise ConfigError("no results to show")
    columns = max([3] + [1 + len(r.get("digits", [])) for r in shown])
    height = 2.3 * len(shown)  # inches; the title line (if any) sits just above the first row
    figure = plt.figure(figsize=(2.2 * columns, height), dpi=100)
    grid = figure.add_gridspec(len(shown), columns, wspace=0.35, hspace=0.55, top=1 - 0.55 / height)
    for row, result in enumerate(shown):
        title = Path(result["input"]).name
        original = figure.add_subplot(grid[row, 0])
        original.set_axis_off()
        if "error" in result:  # marked in red: a frame, "not read", and why
            original.add_patch(Rectangle((0, 0), 1, 1, transform=original.transAxes, fill=False,
                                         edgecolor=FAILED_COLOUR, linewidth=2))
            original.text(0.5, 0.5, "not read", transform=original.transAxes, ha="center", va="center",
                          color=FAILED_COLOUR, fontsize=11, fontweight="bold")
            original.set_title(title, fontsize=8, color=FAILED_COLOUR)
            reason = figure.add_subplot(grid[row, 1:])
            reason.set_axis_off()
            reason.text(0, 0.5, textwrap.fill(result["error"], width=24 * (columns - 1)), fontsize=8,
                        color=FAILED_COLOUR, va="center")
            continue
        original.imshow(result["original"], cmap="gray", vmin=0, vmax=255)
        original.set_title(title, fontsize=8)
        if "digits" in result:
            for k, digit in enumerate(result["digits"]):
                axis = figure.add_subplot(grid[row, 1 + k])
                axis.imshow(digit["image"], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
                axis.set_title(f"{digit['class']} ({digit['confidence']:.0%})", fontsize=9)
                axis.set_xticks([])
                axis.set_yticks([])
            original.set_title(f"{title}\nread: {result['number']} ({result['confidence']:.0%})", fontsize=8)
            continue
        seen = figure.add_subplot(grid[row, 1])
        seen.imshow(result["image"], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        seen.set_title("network input 28x28", fontsize=8)
        seen.set_xticks([])
        seen.set_yticks([])
        bars = figure.add_subplot(grid[row, 2:])
        probabilities = np.asarray(result["probabilities"])
        colors = ["#2b6cb0" if k == result["label"] else "#a0aec0" for k in range(len(probabilities))]
        bars.barh(range(len(probabilities)), probabilities, color=colors)
        bars.set_yticks(range(len(probabilities)))
        bars.set_yticklabels(_class_names(result, len(probabilities)), fontsize=7)
        bars.invert_yaxis()
        bars.set_xlim(0, 1)
        bars.set_title(f"{result['class']} ({result['confidence']:.1%})", fontsize=9)
        bars.tick_params(axis="x", labelsize=7)
    failed = sum("error" in result for result in results)
    notes = [f"first {max_rows} of {len(results)} images"] if len(results) > max_rows else []
    notes += [f"{failed} of {len(results)} could not be read (in red)"] if failed else []
    if notes:
        figure.suptitle("; ".join(notes), fontsize=9, y=1 - 0.05 / height, va="top")
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", bbox_inches="tight")
    plt.close(figure)
    return path


def _class_names(result: dict[str, Any], count: int) -> list[str]:
    """Class names for the bar chart: stored with the result, or the label numbers."""
    names = result.get("classes")
    return list(names) if names and len(names) == count else [str(k) for k in range(count)]
