"""The confusion matrix: which classes the model mixes up."""

from __future__ import annotations

import numpy as np

from digitnet.viz.style import drawing, new_figure


def _annotate(ax, matrix: np.ndarray, text: np.ndarray, vmax: float) -> None:
    size = 8 if len(matrix) <= 10 else 6
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if text[i, j]:
                dark = matrix[i, j] > 0.55 * vmax
                ax.text(j, i, text[i, j], ha="center", va="center", fontsize=size,
                        color="white" if dark else "black")


@drawing
def draw_confusion(confusion: np.ndarray, classes: list[str]):
    """Counts and row-normalised rates side by side; rows are the true class, columns the prediction.

    Row normalisation divides each row by its total, so the diagonal is each class's recall.
    """
    confusion = np.asarray(confusion)
    totals = confusion.sum(axis=1, keepdims=True)
    rates = np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)
    long_names = max(len(c) for c in classes) > 3
    fig = new_figure(13 if long_names else 12, 6.4 if long_names else 5.6)
    count_ax, rate_ax = fig.subplots(1, 2)
    accuracy = np.trace(confusion) / max(confusion.sum(), 1)
    panels = ((count_ax, confusion, "Blues", "Counts", np.where(confusion > 0, confusion.astype(str), "")),
              (rate_ax, rates, "Purples", "Row-normalised (diagonal = recall)",
               np.where(rates >= 0.005, np.char.mod("%.2f", rates), "")))
    for ax, matrix, cmap, title, text in panels:
        vmax = float(matrix.max()) or 1.0
        image = ax.imshow(matrix, cmap=cmap, vmin=0, vmax=vmax)
        _annotate(ax, matrix, text, vmax)
        ticks = np.arange(len(classes))
        ax.set_xticks(ticks, classes, rotation=45 if long_names else 0, ha="right" if long_names else "center")
        ax.set_yticks(ticks, classes)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title)
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(f"Confusion matrix on {int(confusion.sum()):,} test images (accuracy {accuracy:.2%})")
    return fig
