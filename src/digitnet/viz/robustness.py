"""Robustness pictures: accuracy as digits get damaged, and accuracy against coverage.

The numbers come from :mod:`digitnet.robustness`; these functions only draw them.
"""

from __future__ import annotations

import numpy as np

from digitnet.viz.style import (
    ACCENT_COLOR,
    DIGIT_CMAP,
    TRAIN_COLOR,
    VAL_COLOR,
    WRONG_COLOR,
    drawing,
    hide_axis,
    new_figure,
)

_PANELS = (("noise", "Gaussian noise", TRAIN_COLOR), ("rotation", "Rotation", VAL_COLOR),
           ("thickness", "Stroke thickness", ACCENT_COLOR))


def _strip(images: np.ndarray, gap: int = 2) -> np.ndarray:
    """Images ``[L, H, W]`` side by side with light separators, as one float image."""
    count, height, width = images.shape
    strip = np.full((height, count * (width + gap) - gap), np.nan)
    for i, image in enumerate(images):
        strip[:, i * (width + gap): i * (width + gap) + width] = image
    return strip


@drawing
def draw_robustness(curves: dict, examples: dict[str, np.ndarray] | None = None):
    """Accuracy against noise, rotation and thickness (one panel each, clean accuracy dashed).

    With ``examples`` (from :func:`digitnet.robustness.damage_examples`), a strip under each panel
    shows one test digit at every level of that damage.
    """
    fig = new_figure(14, 5.6 if examples else 4.4)
    grid = fig.add_gridspec(2 if examples else 1, 3, height_ratios=[4, 1] if examples else [1])
    clean = curves["clean_accuracy"]
    for column, (key, title, color) in enumerate(_PANELS):
        data = curves[key]
        ax = fig.add_subplot(grid[0, column])
        levels = data["levels"]
        ax.plot(levels, data["accuracy"], color=color, marker="o", lw=2)
        ax.axhline(clean, color="0.5", ls="--", lw=1, label=f"undamaged: {clean:.2%}")
        ax.axhline(0.1, color=WRONG_COLOR, ls=":", lw=1, label="chance (10 classes)")
        for x, y in zip(levels, data["accuracy"], strict=True):
            ax.annotate(f"{y:.0%}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7.5)
        ax.set_ylim(0, 1.08)
        ax.set_xlabel(data["xlabel"])
        ax.set_ylabel("test accuracy")
        ax.set_title(title)
        ax.grid(True)
        if key == "thickness":
            ax.set_xticks(levels)
        ax.legend(loc="best")
        if examples:
            strip_ax = fig.add_subplot(grid[1, column])
            strip_ax.imshow(_strip(examples[key]), cmap=DIGIT_CMAP, vmin=0, vmax=255)
            hide_axis(strip_ax)
            strip_ax.set_xlabel("the same digit at each level, left to right", fontsize=8)
    fig.suptitle(f"Robustness: test accuracy on {curves['count']:,} damaged test images")
    return fig


@drawing
def draw_coverage(curve: dict, marks: tuple[float, ...] = (0.5, 0.9, 0.99)):
    """Left: accuracy on the answered images against coverage. Right: both against the threshold.

    The model answers only when its top probability reaches the threshold and says "not sure"
    otherwise; a higher threshold answers fewer images (lower coverage) but gets more of them right.
    """
    thresholds = np.asarray(curve["thresholds"])
    coverage = np.asarray(curve["coverage"], dtype=float)
    accuracy = np.array([np.nan if a is None else a for a in curve["accuracy"]], dtype=float)
    fig = new_figure(12, 4.6)
    left, right = fig.subplots(1, 2)
    exact = curve.get("sorted") or {"coverage": coverage, "accuracy": accuracy}
    left.plot(exact["coverage"], exact["accuracy"], color=TRAIN_COLOR, lw=2)
    for k, t in enumerate(marks):
        i = int(np.argmin(np.abs(thresholds - t)))
        if np.isfinite(accuracy[i]):
            left.plot(coverage[i], accuracy[i], "o", color=VAL_COLOR, zorder=3)
            left.annotate(f"threshold {thresholds[i]:.2f}: {coverage[i]:.1%} answered, {accuracy[i]:.2%} right",
                          (coverage[i], accuracy[i]), textcoords="axes fraction", xytext=(0.3, 0.12 + 0.1 * k),
                          ha="left", va="center", fontsize=8.5,
                          arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.8})
    left.set_xlabel("coverage (fraction of test images answered, most confident first)")
    left.set_ylabel("accuracy on the answered images")
    left.set_title("Accuracy against coverage")
    left.invert_xaxis()
    left.grid(True)
    right.plot(thresholds, coverage, color=TRAIN_COLOR, lw=2, label="coverage")
    right.plot(thresholds, accuracy, color=VAL_COLOR, lw=2, label="accuracy on answered")
    right.set_xlabel("confidence threshold (minimum top probability)")
    right.set_ylabel("fraction")
    right.set_title("As the threshold rises")
    right.legend(loc="lower left")
    right.grid(True)
    fig.suptitle("Saying 'not sure': answering only confident predictions")
    return fig
