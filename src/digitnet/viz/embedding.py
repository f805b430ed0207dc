"""A 2-D map of what the network's last hidden layer makes of each test image (PCA)."""

from __future__ import annotations

import numpy as np

from digitnet.viz.style import class_colors, drawing, new_figure


@drawing
def draw_embedding(points: np.ndarray, labels: np.ndarray, classes: list[str], explained: np.ndarray,
                   layer_name: str):
    """Scatter ``points [N, 2]`` coloured by true class, with each class's name at its centre.

    Args:
        points: the first two principal components of the hidden representations.
        explained: share of the variance along each of the two axes.
        layer_name: which representation was projected (for the title).
    """
    fig = new_figure(9, 7)
    ax = fig.subplots()
    colors = class_colors(len(classes))
    size = 6 if len(points) > 3000 else 10
    for k, name in enumerate(classes):
        mask = labels == k
        if not np.any(mask):
            continue
        ax.scatter(points[mask, 0], points[mask, 1], s=size, color=colors[k], alpha=0.55, linewidths=0,
                   label=name, rasterized=True)
    for k, name in enumerate(classes):  # class names on top of all the dots
        mask = labels == k
        if np.any(mask):
            cx, cy = np.median(points[mask], axis=0)
            ax.text(cx, cy, name, ha="center", va="center", fontsize=12, fontweight="bold", color=colors[k],
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": colors[k], "alpha": 0.85})
    ax.set_xlabel(f"principal component 1 ({explained[0]:.0%} of the variance)")
    ax.set_ylabel(f"principal component 2 ({explained[1]:.0%} of the variance)")
    ax.set_title(f"Hidden representations of {len(points):,} test images ({layer_name}), PCA to 2-D")
    ax.legend(title="true class", markerscale=2.5, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.grid(True)
    return fig
