"""Backpropagation pictures: how large each parameter's gradient was during training, and the
distribution of the weight gradients dL/dW for one batch."""

from __future__ import annotations

import math

import numpy as np

from digitnet.viz.style import class_colors, drawing, new_figure


@drawing
def draw_grad_norms(grad_norms: dict[str, list[float]]):
    """One curve per parameter: the mean L2 norm of its gradient in each epoch (log scale).

    Weights are solid lines, biases dashed lines of the same colour (one colour per layer).
    Falling curves mean the loss surface flattens as the model fits; a curve near 0 from the
    start would mean that layer does not learn (vanishing gradients).
    """
    fig = new_figure(10, 5)
    ax = fig.subplots()
    layers = sorted({name.rsplit(".", 1)[0] for name in grad_norms}, key=lambda n: int(n.split(".")[-1])
                    if n.split(".")[-1].isdigit() else 0)
    colors = dict(zip(layers, class_colors(len(layers)), strict=True))
    longest = max((len(v) for v in grad_norms.values()), default=0)
    for name, values in grad_norms.items():
        layer, key = name.rsplit(".", 1)
        epochs = np.arange(1, len(values) + 1)
        ax.plot(epochs, values, color=colors[layer], ls="-" if key == "weights" else "--",
                marker="o" if longest <= 30 else None, ms=4, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean gradient L2 norm (log scale)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    if longest == 1:
        ax.set_xlim(0.5, 1.5)
    ax.grid(True, which="both")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_title("Gradient norm of every parameter during training")
    return fig


@drawing
def draw_grad_histograms(grads: dict[str, np.ndarray], batch_size: int, images: str = "test images"):
    """One histogram per weight tensor of dL/dW for one batch of ``batch_size`` ``images`` (log counts).

    Most entries are near 0 (for the first layer: the weights of pixels that are blank in the
    whole batch get exactly 0); the tails show which weights this batch pushes hardest.
    """
    names = [n for n, g in grads.items() if g.ndim >= 2]
    columns = 2 if len(names) == 4 else min(len(names), 3)
    rows = math.ceil(len(names) / columns)
    fig = new_figure(4.6 * columns, 3.6 * rows)
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes[len(names):]:
        ax.set_visible(False)
    colors = class_colors(len(names))
    for ax, name, color in zip(axes, names, colors, strict=False):
        values = grads[name].ravel()
        ax.hist(values, bins=int(np.clip(np.sqrt(values.size), 10, 60)), color=color, alpha=0.85)
        ax.set_yscale("log")
        ax.set_title(f"dL/d {name}")
        ax.set_xlabel(f"gradient value (norm {np.linalg.norm(values):.3g})")
        ax.set_ylabel("count (log)")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 2))
    fig.suptitle(f"Weight gradients from backpropagation on one batch of {batch_size} {images}")
    return fig
