"""Pictures of a sweep: test accuracy against each swept setting, and the learning curves of every setting.

The numbers come from :mod:`digitnet.sweep` (the results table, the groups of trials that differ only in
their seed, and their curves' mean, lowest and highest value per epoch); this module only draws them.
"""

from __future__ import annotations

from typing import Any

from digitnet.viz.style import NEUTRAL_COLOR, class_colors, drawing, new_figure

METRIC_LABELS = {"val_accuracy": "validation accuracy", "train_loss": "training loss"}


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _ordered(values, order: list[Any] | None) -> list[Any]:
    """Distinct values: numbers ascending, names in the order the sweep listed them."""
    distinct = list(dict.fromkeys(values))
    if _numeric(distinct):
        return sorted(distinct)
    rank = {_text(v): i for i, v in enumerate(order or [])}
    return sorted(distinct, key=lambda v: (rank.get(_text(v), len(rank)), str(v)))


def _positions(values: list[Any], order: list[Any] | None = None) -> tuple[list[Any], dict[Any, float], bool]:
    """Ordered distinct values, their x positions and whether the axis is logarithmic."""
    distinct = _ordered(values, order)
    if _numeric(distinct) and len(distinct) > 1:
        log = min(distinct) > 0 and max(distinct) / min(distinct) >= 10
        return distinct, {v: float(v) for v in distinct}, log
    return distinct, {v: float(i) for i, v in enumerate(distinct)}, False


def _second_palette(count: int) -> list:
    """Colours for series that are not the main colour key (Dark2, so they do not read as the same)."""
    import matplotlib

    cmap = matplotlib.colormaps["Dark2"]
    return [cmap(i % cmap.N) for i in range(count)]


def _series_label(settings: dict[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{k}={_text(settings[k])}" for k in keys) or "all"


@drawing
def draw_sweep(rows: list[dict[str, Any]], keys: list[str], curves: list, metric: str, random_keys=(),
               title: str = "Sweep", order: dict[str, list[Any]] | None = None, best: list[str] | None = None):
    """Top row: test accuracy against each swept setting (one line per combination of the other
    settings: the mean over seeds, a bar from the lowest to the highest seed, a dot per seed). Bottom
    row: the learning curves (``metric`` per epoch; mean over seeds, band from lowest to highest), one
    panel per value of the first setting and one colour per combination of the others.

    ``rows`` are the results table, ``curves`` :class:`digitnet.sweep.GroupCurve` objects, ``order``
    the grid's values per setting (names are shown in that order), ``best`` lines of text shown in a
    free panel (the best settings).
    """
    order = order or {}
    ok = [r for r in rows if r.get("status") == "ok" and r.get("test_accuracy") is not None]
    shown = keys[:3]
    first, rest = (keys[0], keys[1:]) if keys else (None, [])
    facets = _ordered([c.settings[first] for c in curves], order.get(first)) \
        if first and rest and first not in random_keys else [None]
    facets = facets[:4]
    columns = max(len(shown), len(facets), 1)
    fig = new_figure(4.2 * columns + 0.6, 8.2)
    grid = fig.add_gridspec(2, columns)

    # one colour per combination of the settings after the first (per combination of all for 1 key)
    colour_keys = rest if rest else keys
    palettes: dict[tuple[str, ...], dict[tuple, Any]] = {}

    def colour(settings: dict[str, Any], by: list[str] | None = None):
        """The colour of a combination of the ``by`` settings (default: the settings after the first)."""
        by = colour_keys if by is None else by
        if tuple(by) not in palettes:
            combos = [()]
            for k in by:
                combos = [(*c, _text(v)) for c in combos for v in _ordered([r.get(k) for r in ok], order.get(k))]
            colours = class_colors(max(len(combos), 1)) if list(by) == list(colour_keys) else \
                _second_palette(len(combos))
            palettes[tuple(by)] = dict(zip(combos, colours, strict=False))
        return palettes[tuple(by)].get(tuple(_text(settings.get(k)) for k in by), NEUTRAL_COLOR)

    # -- accuracy against each setting --------------------------------------------------------------
    for i, key in enumerate(shown):
        ax = fig.add_subplot(grid[0, i])
        others = [k for k in keys if k != key]
        if key in random_keys:
            for row in ok:
                ax.scatter(row[key], row["test_accuracy"], s=18, color=colour(row), alpha=0.8)
            ax.set_xscale("log" if min(r[key] for r in ok) > 0 and
                          max(r[key] for r in ok) / min(r[key] for r in ok) >= 10 else "linear")
        else:
            distinct, xpos, log = _positions([r.get(key) for r in ok], order.get(key))
            series: dict[tuple, list[dict[str, Any]]] = {}
            for row in ok:
                series.setdefault(tuple(_text(row.get(k)) for k in others), []).append(row)
            count = len(series)
            ranks = {k: {_text(v): i for i, v in enumerate(_ordered([r.get(k) for r in ok], order.get(k)))}
                     for k in others}
            ordered_series = sorted(series.items(), key=lambda item: [ranks[k][v] for k, v in zip(others, item[0],
                                                                                                   strict=True)])
            for s, (_, members) in enumerate(ordered_series):
                settings = {k: members[0].get(k) for k in others}
                c = colour(settings, others)
                # a small sideways offset on categorical axes keeps overlapping series apart
                shift = 0.0 if log or _numeric(distinct) and len(distinct) > 1 else (s - (count - 1) / 2) * 0.08
                xs, means = [], []
                for value in distinct:
                    accs = [r["test_accuracy"] for r in members if r.get(key) == value]
                    if not accs:
                        continue
                    x = xpos[value] * (1 + shift * 0.5) if log else xpos[value] + shift
                    mean = sum(accs) / len(accs)
                    xs.append(x)
                    means.append(mean)
                    ax.vlines(x, min(accs), max(accs), color=c, lw=2, alpha=0.5)
                    ax.scatter([x] * len(accs), accs, s=10, color=c, alpha=0.6, zorder=3)
                ax.plot(xs, means, "o-", color=c, ms=5, lw=1.5,
                        label=_series_label(settings, others) if others else None, zorder=4)
            if log:
                ax.set_xscale("log")
            ax.set_xticks([xpos[v] for v in distinct], [_text(v) for v in distinct])
            ax.minorticks_off()
            if others and count > 1:
                ax.legend(fontsize=8, loc="best")
        ax.set_xlabel(key)
        ax.set_ylabel("test accuracy")
        ax.grid(True, axis="y")
        ax.set_title(f"Test accuracy by {key}")
    if not shown and ok:  # seeds only: one column of dots
        ax = fig.add_subplot(grid[0, 0])
        accs = [r["test_accuracy"] for r in ok]
        ax.scatter(range(len(accs)), accs, color=colour({}))
        ax.set_xlabel("seed")
        ax.set_ylabel("test accuracy")
        ax.set_title("Test accuracy by seed")

    if best and len(shown) < columns:  # a free cell: the best settings in words
        ax = fig.add_subplot(grid[0, columns - 1])
        ax.axis("off")
        ax.set_title("Best settings: mean +- std over seeds")
        ax.text(0.0, 0.95, "\n".join(best), va="top", ha="left", family="monospace", fontsize=8.5,
                transform=ax.transAxes)

    # -- learning curves ----------------------------------------------------------------------------
    axes = []
    for j, facet in enumerate(facets):
        ax = fig.add_subplot(grid[1, j], sharey=axes[0] if axes else None)
        axes.append(ax)
        for curve in curves:
            if facet is not None and curve.settings.get(first) != facet:
                continue
            c = colour(curve.settings)
            label = _series_label(curve.settings, colour_keys) if keys else "all trials"
            if curve.group.startswith("draw "):
                label = curve.group
            ax.plot(curve.epochs, curve.mean, color=c, lw=1.8, marker="o" if len(curve.epochs) <= 20 else None,
                    ms=3, label=f"{label} ({curve.seeds} seed{'s' if curve.seeds != 1 else ''})")
            if curve.seeds > 1:
                ax.fill_between(curve.epochs, curve.low, curve.high, color=c, alpha=0.2, lw=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.grid(True)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if metric == "train_loss":
            ax.set_yscale("log")
        ax.set_title(f"{METRIC_LABELS.get(metric, metric).capitalize()}"
                     + (f": {first}={_text(facet)}" if facet is not None else " per epoch"))
        if len(curves) <= 12:
            ax.legend(fontsize=8, loc="best")
    failed = len(rows) - len(ok)
    fig.suptitle(f"{title}: {len(ok)} trials" + (f", {failed} diverged" if failed else "")
                 + "\nlines: the mean over seeds; bars and bands: from the lowest to the highest seed; dots: each seed")
    return fig
