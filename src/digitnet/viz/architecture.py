"""The architecture diagram: a fully connected network as columns of neurons, any other layer
stack (convolutions, pooling, batch norm) as a row of boxes with their output shapes."""

from __future__ import annotations

import numpy as np

from digitnet.analysis import layer_table
from digitnet.viz.style import (
    ACCENT_COLOR,
    DIVERGING,
    NEUTRAL_COLOR,
    TRAIN_COLOR,
    VAL_COLOR,
    drawing,
    new_figure,
)

#: at most this many neurons are drawn in a column; wider layers show their first and last ones
MAX_SHOWN = 10


def mlp_types() -> set[str]:
    """Layer types drawn as columns of neurons: Dense, Dropout and every registered activation."""
    from digitnet.nn.registry import entries

    return {"Dense", "Dropout"} | {found.target.__name__ for found in entries("activation")}


def shown_units(count: int, limit: int = MAX_SHOWN) -> list[int]:
    """Which unit indices a column shows: all, or the first and last ``limit // 2``."""
    if count <= limit:
        return list(range(count))
    half = limit // 2
    return list(range(half)) + list(range(count - half, count))


def _mlp_columns(model) -> list[dict]:
    """Columns of the diagram: the input, then one per Dense layer with what follows it."""
    columns = [{"units": model.input_shape[0], "title": "input", "notes": [], "weights": None, "params": 0}]
    for row, layer in zip(layer_table(model), model.layers, strict=True):
        if row["type"] == "Dense":
            columns.append({"units": row["output_shape"][0], "title": f"Dense {len(columns)}", "notes": [],
                            "weights": layer.params["weights"], "params": row["params"]})
        elif row["type"] == "Dropout":
            columns[-1]["notes"].append(f"dropout {layer.rate:g}")
        else:
            columns[-1]["notes"].append(row["type"])
    return columns


def _draw_mlp(model, classes: list[str] | None):
    import matplotlib

    columns = _mlp_columns(model)
    fig = new_figure(max(9.0, 2.6 * len(columns)), 7.2)
    ax = fig.subplots()
    ax.set_axis_off()
    ax.set_xlim(-0.7, len(columns) - 0.3)
    ax.set_ylim(-0.22, 1.1)
    cmap = matplotlib.colormaps[DIVERGING]
    positions = []
    for c, column in enumerate(columns):
        shown = shown_units(column["units"])
        gap = column["units"] > len(shown)
        slots = len(shown) + (1 if gap else 0)
        ys = np.linspace(0.92, 0.08, slots) if slots > 1 else np.array([0.5])
        if gap:  # leave the middle slot for the dots
            middle = len(shown) // 2
            ys = np.delete(ys, middle)
            ax.text(c, np.linspace(0.92, 0.08, slots)[middle], "\u22ee", ha="center", va="center", fontsize=18,
                    color=NEUTRAL_COLOR)
        positions.append((shown, ys))
    for c in range(1, len(columns)):
        weights = columns[c]["weights"]
        (src_units, src_ys), (dst_units, dst_ys) = positions[c - 1], positions[c]
        block = weights[np.ix_(src_units, dst_units)]
        limit = float(np.abs(block).max()) or 1.0
        for i, y0 in enumerate(src_ys):
            for j, y1 in enumerate(dst_ys):
                value = block[i, j] / limit
                ax.plot([c - 1, c], [y0, y1], color=cmap(0.5 + 0.5 * value), lw=0.4 + 1.4 * abs(value),
                        alpha=0.25 + 0.6 * abs(value), zorder=1)
        n_in, n_out = columns[c - 1]["units"], columns[c]["units"]
        ax.text(c - 0.5, -0.07, f"{n_in}x{n_out} weights\n+ {n_out} biases\n= {columns[c]['params']:,} params",
                ha="center", va="top", fontsize=8.5, color=NEUTRAL_COLOR)
    last = len(columns) - 1
    for c, (column, (shown, ys)) in enumerate(zip(columns, positions, strict=True)):
        color = TRAIN_COLOR if c == 0 else (VAL_COLOR if c == last else ACCENT_COLOR)
        ax.scatter(np.full(len(ys), c), ys, s=150, color="white", edgecolors=color, linewidths=2, zorder=3)
        units = column["units"]
        what = "inputs (pixels)" if c == 0 else ("outputs" if c == last else "units")
        counted = f"{units} {what}" + (f"\n({len(shown)} shown)" if units > len(shown) else "")
        ax.text(c, 1.0, f"{column['title']}\n{counted}", ha="center", va="bottom", fontsize=9.5, fontweight="bold")
        notes = list(column["notes"])
        if c == last and model.output_kind == "logits":
            notes.append("softmax")
        if notes:
            ax.text(c, 0.02, " -> ".join(notes), ha="center", va="top", fontsize=9.5, color=color,
                    fontweight="bold")
        if c == last and classes and units == len(classes):
            for unit, y in zip(shown, ys, strict=True):
                ax.text(c + 0.12, y, classes[unit], va="center", fontsize=8.5)
    fig.suptitle(f"Architecture {'-'.join(str(col['units']) for col in columns)}: "
                 f"{model.num_params():,} parameters (connections coloured by weight: red +, blue -)")
    return fig


_BOX_COLORS = {"Conv2D": "#dbe9f6", "MaxPool2D": "#fde2cf", "BatchNorm": "#e6dcf2", "BatchNorm2D": "#e6dcf2",
               "Dense": "#d9f0d3", "Flatten": "#eeeeee", "Dropout": "#f5f5f5"}


def _draw_boxes(model, classes: list[str] | None):
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    rows = [{"label": "Input", "output_shape": tuple(model.input_shape), "params": 0, "type": "Input"}]
    rows += layer_table(model)
    per_line = min(len(rows), 7)
    lines = -(-len(rows) // per_line)
    fig = new_figure(max(8.0, 2.0 * per_line), 1.9 * lines + 0.7)
    ax = fig.subplots()
    ax.set_axis_off()
    ax.set_xlim(-0.1, per_line)
    ax.set_ylim(-lines + 1.0, 0.9)
    centres = []
    for k, row in enumerate(rows):
        line, col = divmod(k, per_line)
        if line % 2:  # snake layout: odd lines run right to left, so every arrow is straight
            col = per_line - 1 - col
        x, y = col + 0.5, -line + 0.45
        centres.append((x, y))
        face = _BOX_COLORS.get(row["type"], "#fff8c5" if row["type"] != "Input" else "#f0f0f0")
        ax.add_patch(FancyBboxPatch((x - 0.42, y - 0.36), 0.84, 0.72, boxstyle="round,pad=0.02", fc=face,
                                    ec=NEUTRAL_COLOR, lw=1.2))
        shape = "x".join(str(d) for d in row["output_shape"])
        label = row["label"].replace(" ", "\n", 1) if len(row["label"]) > 12 else row["label"]
        ax.text(x, y + 0.14, label, ha="center", va="center", fontsize=8.5, fontweight="bold")
        ax.text(x, y - 0.13, shape, ha="center", va="center", fontsize=8.5)
        if row["params"]:
            ax.text(x, y - 0.27, f"{row['params']:,} params", ha="center", va="center", fontsize=7.5,
                    color=NEUTRAL_COLOR)
    for (x0, y0), (x1, y1) in zip(centres, centres[1:], strict=False):
        if y0 == y1:
            step = 0.42 if x1 > x0 else -0.42
            start, end = (x0 + step, y0), (x1 - step, y1)
        else:  # down to the next line
            start, end = (x0, y0 - 0.36), (x1, y1 + 0.36)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color=NEUTRAL_COLOR))
    fig.suptitle(f"Architecture: {len(model.layers)} layers, {model.num_params():,} parameters "
                 f"(each box: layer, output shape per image, parameters)")
    return fig


def is_mlp(model) -> bool:
    """Whether the model is a plain fully connected stack (drawn as neurons) or not (drawn as boxes)."""
    types = {row["type"] for row in layer_table(model)}
    return len(model.input_shape) == 1 and types <= mlp_types() and "Dense" in types


@drawing
def draw_architecture(model, classes: list[str] | None = None):
    """The model's structure: neurons and connections for an MLP, boxes with shapes otherwise.

    MLP columns show at most :data:`MAX_SHOWN` neurons ("128 units (10 shown)"); the lines between
    the shown neurons are coloured by their actual weights (red positive, blue negative).
    """
    return _draw_mlp(model, classes) if is_mlp(model) else _draw_boxes(model, classes)
