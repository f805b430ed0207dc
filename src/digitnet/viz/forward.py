"""Forward propagation of one image: the input, every layer's values, the output probabilities."""

from __future__ import annotations

import numpy as np

from digitnet.viz.style import (
    CORRECT_COLOR,
    DIGIT_CMAP,
    DIVERGING,
    NEUTRAL_COLOR,
    SEQUENTIAL,
    WRONG_COLOR,
    drawing,
    hide_axis,
    new_figure,
    symmetric_limit,
)

_KIND_TEXT = {"pre-activation": "pre-activation z = x W + b", "activation": "activation a = f(z)",
              "output": "output scores (logits), softmax gives the bars", "other": "output"}


def _as_picture(values: np.ndarray, max_channels: int = 8) -> np.ndarray:
    """A layer's output as a 2-D array: a 1-row strip for vectors, channels side by side for maps."""
    if values.ndim == 1:
        return values[None, :]
    if values.ndim == 3:  # [C, H, W] feature maps: the first channels next to each other
        channels = values[:max_channels]
        gap = np.full((channels.shape[1], 1), np.nan)
        return np.concatenate([part for c in channels for part in (c, gap)][:-1], axis=1)
    return values.reshape(values.shape[0], -1)


@drawing
def draw_forward(stages, probs: np.ndarray, classes: list[str], label: int | None = None, index: int | None = None,
                 probs_title: str = "softmax probabilities"):
    """One image flowing through the network.

    Args:
        stages: from :func:`digitnet.analysis.forward_trace` (input image first).
        probs: the output probabilities ``[K]``.
        label: the true class, when known (its bar gets a black outline).
        index: the image's index in its dataset (for the title).
        probs_title: what the bars are (softmax of logits, or normalised sigmoid outputs).

    Signed values (pre-activations, scores) use a blue-white-red scale centred on 0,
    non-negative activations a dark-to-yellow scale.
    """
    middle = stages[1:]
    rows = max(len(middle), 1)
    # feature maps [C, H, W] get taller rows than vectors so they are not squashed flat
    heights = [1.8 if np.ndim(s.values) == 3 else 1.0 for s in middle] or [1.0]
    fig = new_figure(15, max(4.5, 0.85 * sum(heights) + 1.6))
    grid = fig.add_gridspec(rows, 3, width_ratios=[1.15, 5.2, 1.9], height_ratios=heights)
    image_ax = fig.add_subplot(grid[:, 0])
    image_ax.imshow(stages[0].values, cmap=DIGIT_CMAP, vmin=0, vmax=255)
    hide_axis(image_ax)
    image_ax.set_title("input image")
    image_ax.set_xlabel(f"{stages[0].values.shape[0]}x{stages[0].values.shape[1]} pixels, scaled to [0, 1]",
                        fontsize=8)
    for row, stage in enumerate(middle):
        ax = fig.add_subplot(grid[row, 1])
        picture = _as_picture(np.asarray(stage.values, dtype=np.float64))
        signed = np.nanmin(picture) < 0
        if signed:
            limit = symmetric_limit(picture[np.isfinite(picture)], 100)
            shown = ax.imshow(picture, cmap=DIVERGING, vmin=-limit, vmax=limit, aspect="auto")
        else:
            shown = ax.imshow(picture, cmap=SEQUENTIAL, vmin=0, vmax=np.nanmax(picture) or 1.0, aspect="auto")
        ax.set_yticks([])
        size = stage.values.size
        shape = "x".join(str(d) for d in stage.values.shape)
        what = _KIND_TEXT.get(stage.kind, stage.kind)
        if stage.kind == "output" and "Dense" not in stage.name:
            what = "output"
        elif "Conv2D" in stage.name:
            what = "convolution z = W * x + b"
        elif "BatchNorm" in stage.name:
            what = "batch norm gamma * z_hat + beta"
        ax.set_title(f"{stage.name}: {what}   [{shape}]", fontsize=9,
                     loc="left", fontweight="normal")
        if stage.values.ndim == 1 and size <= 16:
            ax.set_xticks(range(size), classes[:size] if size == len(classes) else range(size), fontsize=8)
        elif stage.values.ndim == 1:
            ax.tick_params(axis="x", labelsize=7)
        else:
            ax.set_xticks([])
        fig.colorbar(shown, ax=ax, pad=0.01, aspect=8, fraction=0.04)
    bar_ax = fig.add_subplot(grid[:, 2])
    predicted = int(np.argmax(probs))
    colors = [NEUTRAL_COLOR] * len(probs)
    colors[predicted] = CORRECT_COLOR if label is None or label == predicted else WRONG_COLOR
    positions = np.arange(len(probs))
    bars = bar_ax.barh(positions, probs, color=colors)
    if label is not None:
        bars[label].set_edgecolor("black")
        bars[label].set_linewidth(1.5)
    bar_ax.set_yticks(positions, classes)
    bar_ax.invert_yaxis()
    bar_ax.set_xlim(0, 1.18)
    bar_ax.set_xlabel("probability")
    for p, value in zip(positions, probs, strict=True):
        if value >= 0.005:
            bar_ax.text(value + 0.02, p, f"{value:.0%}", va="center", fontsize=8)
    bar_ax.set_title(probs_title)
    title = "Forward pass" + (f" of test image #{index}" if index is not None else "")
    title += f": predicted {classes[predicted]} ({probs[predicted]:.1%})"
    if label is not None:
        title += f", true {classes[label]}" + (" - correct" if label == predicted else " - WRONG")
    fig.suptitle(title)
    return fig
