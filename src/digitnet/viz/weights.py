"""Weights before and after training: the matrices, their change, their histograms, and the
first layer's weights seen as images ("what each neuron looks for")."""

from __future__ import annotations

import math

import numpy as np

from digitnet.viz.style import (
    DIVERGING,
    TRAIN_COLOR,
    VAL_COLOR,
    drawing,
    hide_axis,
    new_figure,
    symmetric_limit,
)


def as_unit_rows(weights: np.ndarray) -> np.ndarray:
    """A weight tensor as a matrix with one row per output unit.

    Dense weights ``[in, out]`` are transposed to ``[out, in]``; convolution kernels
    ``[out_channels, in_channels, kh, kw]`` become ``[out_channels, in_channels*kh*kw]``.
    """
    weights = np.asarray(weights)
    if weights.ndim == 2:
        return weights.T
    return weights.reshape(weights.shape[0], -1)


@drawing
def draw_weight_change(change: dict):
    """Three heat maps of one weight tensor: at initialisation, after training, and the difference.

    ``change`` comes from :func:`digitnet.analysis.weight_change`. Start and end share one colour
    scale; the difference has its own (it is usually much smaller).
    """
    before, after, diff = (as_unit_rows(change[k]) for k in ("before", "after", "diff"))
    units, inputs = before.shape
    wide = inputs > 2 * units
    fig = new_figure(13, 9.5) if wide else new_figure(14, 5.2)
    axes = fig.subplots(3, 1) if wide else fig.subplots(1, 3)
    limit = symmetric_limit(np.concatenate([before.ravel(), after.ravel()]))
    diff_limit = symmetric_limit(diff)
    panels = ((before, limit, "At initialisation"), (after, limit, "After training"),
              (diff, diff_limit, "Change (after - before)"))
    for ax, (matrix, lim, title) in zip(axes, panels, strict=True):
        image = ax.imshow(matrix, cmap=DIVERGING, vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
        ax.set_title(title)
        ax.set_ylabel("output unit")
        ax.set_xlabel("input (pixel index)" if inputs == 784 else "input")
        fig.colorbar(image, ax=ax, shrink=0.9, pad=0.01, label="weight" if matrix is not diff else "change")
    fig.suptitle(f"{change['name']} {list(change['before'].shape)}: weights moved by "
                 f"{change['relative_change']:.0%} of their initial norm")
    return fig


@drawing
def draw_weight_histograms(initial: dict[str, np.ndarray], final: dict[str, np.ndarray], names: list[str]):
    """One panel per weight tensor: the distribution of its values at the start and at the end."""
    count = len(names)
    columns = 2 if count == 4 else min(count, 3)
    rows = math.ceil(count / columns)
    fig = new_figure(4.6 * columns, 3.6 * rows)
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    for ax, name in zip(axes, names, strict=False):
        start, end = initial[name].ravel(), final[name].ravel()
        bins = int(np.clip(np.sqrt(start.size), 10, 60))  # few values, few bins
        edges = np.linspace(min(start.min(), end.min()), max(start.max(), end.max()), bins + 1)
        ax.hist(start, bins=edges, color=TRAIN_COLOR, alpha=0.55, label=f"start (std {start.std():.3f})")
        ax.hist(end, bins=edges, color=VAL_COLOR, alpha=0.55, label=f"end (std {end.std():.3f})")
        ax.set_title(f"{name} ({start.size:,} values)")
        ax.set_xlabel("weight value")
        ax.set_ylabel("count")
        ax.legend()
    fig.suptitle("Weight distributions before and after training")
    return fig


@drawing
def draw_input_weights(weights: np.ndarray, count: int = 64, image_shape: tuple[int, int] = (28, 28),
                       name: str = "layers.0.weights"):
    """The first layer's weights into each of ``count`` units, each shown as an image.

    For a Dense layer ``[784, units]``, column ``j`` reshaped to 28x28 is the pattern of pixels
    that excites unit ``j`` (red: ink there raises its input, blue: lowers it). One colour scale
    centred on 0 is shared by all tiles, so they can be compared.
    """
    weights = np.asarray(weights)
    pixels = image_shape[0] * image_shape[1]
    if weights.ndim != 2 or weights.shape[0] != pixels:
        raise ValueError(f"expected first-layer weights [{pixels}, units], got {list(weights.shape)}")
    units = weights.shape[1]
    shown = min(count, units)
    columns = min(shown, max(4, math.ceil(math.sqrt(shown))))
    rows = math.ceil(shown / columns)
    fig = new_figure(max(1.15 * columns + 1.2, 5.0), 1.15 * rows + 1.0)
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    limit = symmetric_limit(weights[:, :shown])
    image = None
    for j, ax in enumerate(axes):
        hide_axis(ax)
        if j < shown:
            image = ax.imshow(weights[:, j].reshape(image_shape), cmap=DIVERGING, vmin=-limit, vmax=limit)
            ax.set_title(f"unit {j}", fontsize=8)
    fig.colorbar(image, ax=list(axes), shrink=0.6, label="weight")
    shown_text = f"{shown} of {units} units" if shown < units else f"all {units} units"
    fig.suptitle(f"What each first-layer neuron looks for\n{name}, {shown_text}")
    return fig
