"""Grids of test images with what the model answered: all of them, or its most confident mistakes."""

from __future__ import annotations

import math

import numpy as np

from digitnet.viz.style import CORRECT_COLOR, DIGIT_CMAP, WRONG_COLOR, drawing, hide_axis, new_figure


def _short(name: str, limit: int = 11) -> str:
    return name if len(name) <= limit else name[:limit - 1] + "."


def _grid(images: np.ndarray, captions: list[str], colors: list[str], title: str, columns: int | None = None):
    count = len(images)
    columns = columns or min(count, max(4, math.ceil(math.sqrt(count * 1.5))))
    columns = max(1, min(columns, count)) if count else 1
    rows = max(1, math.ceil(count / columns))
    caption_lines = max((c.count("\n") + 1 for c in captions), default=1)
    widest = max((len(line) for c in captions for line in c.split("\n")), default=10)
    tile_width = max(1.25, 0.075 * widest + 0.15)  # room for the longest caption line at 8.5 pt
    fig = new_figure(max(tile_width * columns, 4.5), (1.1 + 0.17 * caption_lines) * rows + 0.9)
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        hide_axis(ax)
    for ax, image, caption, color in zip(axes, images, captions, colors, strict=False):
        ax.imshow(image, cmap=DIGIT_CMAP, vmin=0, vmax=255)
        ax.set_title(caption, fontsize=8.5, color=color, fontweight="bold" if color == WRONG_COLOR else "normal")
        if color == WRONG_COLOR:
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color(WRONG_COLOR)
                spine.set_linewidth(2)
    if count == 0:
        axes[0].text(0.5, 0.5, "nothing to show", ha="center", va="center", transform=axes[0].transAxes)
    fig.suptitle(title)
    return fig


@drawing
def draw_predictions(images: np.ndarray, labels: np.ndarray | None, predicted: np.ndarray,
                     confidence: np.ndarray, classes: list[str], first_index: int = 0):
    """A grid of images captioned "true / predicted (confidence)"; wrong answers in red with a red frame.

    Args:
        images: uint8 ``[N, H, W]``; labels ``[N]`` or None; predicted ``[N]``; confidence ``[N]``.
        first_index: index of ``images[0]`` in its dataset (for the title).
    """
    captions, colors = [], []
    for i in range(len(images)):
        guess = f"{_short(classes[predicted[i]])} {confidence[i]:.0%}"
        if labels is None:
            captions.append(f"pred {guess}")
            colors.append("black")
        else:
            captions.append(f"true {_short(classes[labels[i]])}\npred {guess}")
            colors.append(CORRECT_COLOR if labels[i] == predicted[i] else WRONG_COLOR)
    wrong = 0 if labels is None else int(np.count_nonzero(np.asarray(labels) != np.asarray(predicted)))
    last = first_index + len(images) - 1
    title = f"Predictions on test images {first_index}-{last}"
    if labels is not None:
        title += f"\n{len(images) - wrong} right, {wrong} wrong (in red)"
    return _grid(images, captions, colors, title)


@drawing
def draw_mistakes(images: np.ndarray, labels: np.ndarray, predicted: np.ndarray, confidence: np.ndarray,
                  classes: list[str], indices: np.ndarray, total_wrong: int, total: int):
    """The model's most confident wrong answers, most confident first, with their dataset index."""
    captions = [f"#{indices[i]}\ntrue {_short(classes[labels[i]])}\npred {_short(classes[predicted[i]])} "
                f"{confidence[i]:.0%}" for i in range(len(images))]
    title = f"Most confident mistakes\n{len(images)} of the {total_wrong:,} wrong answers on {total:,} test images"
    return _grid(images, captions, [WRONG_COLOR] * len(images), title)
