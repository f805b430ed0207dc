"""Convolutional networks: the learned first-layer filters, and one image's feature maps layer by layer."""

from __future__ import annotations

import math

import numpy as np

from digitnet.viz.style import DIGIT_CMAP, DIVERGING, SEQUENTIAL, drawing, hide_axis, new_figure, symmetric_limit


@drawing
def draw_filters(kernels: np.ndarray, name: str = "layers.0.weights", count: int = 64):
    """First-layer convolution kernels ``[out_channels, in_channels, kh, kw]`` as small images.

    Each filter slides over the image; red weights respond to ink, blue ones to background, so a
    filter with red above blue detects the top edge of a stroke. Input channels are averaged.
    """
    kernels = np.asarray(kernels)
    if kernels.ndim != 4:
        raise ValueError(f"expected convolution kernels [out, in, kh, kw], got {list(kernels.shape)}")
    shown = min(count, kernels.shape[0])
    tiles = kernels[:shown].mean(axis=1)
    columns = min(shown, 8)
    rows = math.ceil(shown / columns)
    fig = new_figure(max(1.3 * columns + 1.3, 5.0), 1.4 * rows + 1.2)
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    limit = symmetric_limit(tiles, 100)
    image = None
    for j, ax in enumerate(axes):
        hide_axis(ax)
        if j < shown:
            image = ax.imshow(tiles[j], cmap=DIVERGING, vmin=-limit, vmax=limit)
            ax.set_title(f"filter {j}", fontsize=8)
    fig.colorbar(image, ax=list(axes), shrink=0.7, label="weight")
    size = f"{kernels.shape[2]}x{kernels.shape[3]}"
    fig.suptitle(f"Learned {size} filters of the first convolution\n{name}, {shown} of {kernels.shape[0]}")
    return fig


@drawing
def draw_feature_maps(stages, max_channels: int = 8, index: int | None = None):
    """The input image, then the first ``max_channels`` feature maps of every layer that outputs
    maps ``[C, H, W]`` (convolutions, batch norm, activations, pooling), one row per layer."""
    maps = [s for s in stages[1:] if np.ndim(s.values) == 3]
    if not maps:
        raise ValueError("the model has no layer that outputs feature maps [C, H, W]")
    columns = min(max_channels, max(s.values.shape[0] for s in maps))
    rows = len(maps) + 1
    fig = new_figure(max(1.35 * columns + 2.6, 6.0), 1.45 * rows + 0.8)
    grid = fig.add_gridspec(rows, columns + 1, width_ratios=[2.2] + [1] * columns)
    image_ax = fig.add_subplot(grid[0, 0])
    image_ax.imshow(stages[0].values, cmap=DIGIT_CMAP, vmin=0, vmax=255)
    hide_axis(image_ax)
    image_ax.set_title("input", fontsize=9)
    for r, stage in enumerate(maps, start=1):
        values = np.asarray(stage.values)
        label_ax = fig.add_subplot(grid[r, 0])
        label_ax.set_axis_off()
        shape = "x".join(str(d) for d in values.shape)
        label_ax.text(1.0, 0.5, f"{stage.name}\n[{shape}]", ha="right", va="center", fontsize=8.5,
                      transform=label_ax.transAxes)
        signed = values.min() < 0
        limit = symmetric_limit(values, 100) if signed else (float(values.max()) or 1.0)
        for c in range(min(columns, values.shape[0])):
            ax = fig.add_subplot(grid[r, c + 1])
            hide_axis(ax)
            if signed:
                ax.imshow(values[c], cmap=DIVERGING, vmin=-limit, vmax=limit)
            else:
                ax.imshow(values[c], cmap=SEQUENTIAL, vmin=0, vmax=limit)
            if r == 1:
                ax.set_title(f"channel {c}", fontsize=8)
    title = "Feature maps layer by layer" + (f" for test image #{index}" if index is not None else "")
    fig.suptitle(title + f"\nfirst {columns} channels of each layer")
    return fig
