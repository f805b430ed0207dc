"""The shared look of every picture, and writing a figure as a PNG.

Figures are built as :class:`matplotlib.figure.Figure` objects directly (never through pyplot), so
drawing touches no global state, needs no display and works the same in a script, a test, a web
server or a notebook. matplotlib is imported inside the functions: importing digitnet stays fast.
Layouts use matplotlib's "constrained" engine, so a saved PNG is exactly ``size_inches * dpi``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

#: Default resolution of saved pictures (dots per inch).
DEFAULT_DPI = 100

RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 13,
    "figure.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "grid.alpha": 0.3,
    "image.interpolation": "nearest",
    "savefig.facecolor": "white",
    "figure.facecolor": "white",
}

#: Colours used with a meaning across pictures.
TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#ff7f0e"
CORRECT_COLOR = "#1a7f37"
WRONG_COLOR = "#cf222e"
ACCENT_COLOR = "#6f42c1"
NEUTRAL_COLOR = "#57606a"
#: Diverging map for signed values (weights, gradients): blue negative, white 0, red positive.
DIVERGING = "RdBu_r"
#: Sequential map for non-negative values (activations, probabilities, counts).
SEQUENTIAL = "viridis"
#: Digits are shown as on paper: dark ink on white.
DIGIT_CMAP = "gray_r"


@contextlib.contextmanager
def styled() -> Iterator[None]:
    """Apply the digitnet look while a figure is being built."""
    import matplotlib

    with matplotlib.rc_context(RC):
        yield


def drawing(function: Callable) -> Callable:
    """Decorator for draw functions: the whole figure is built inside :func:`styled`.

    (matplotlib reads its style when each text, line or axis is created, so the style must be
    active for the whole drawing, not only when the Figure is made.)
    """

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with styled():
            return function(*args, **kwargs)

    return wrapper


def new_figure(width: float, height: float):
    """A blank Figure of ``width x height`` inches with the constrained layout engine."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def class_colors(count: int) -> list:
    """``count`` distinguishable colours (tab10, then tab20 for more classes)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def symmetric_limit(values: np.ndarray, percentile: float = 99.5) -> float:
    """A colour-scale limit ``v`` for signed data shown on ``[-v, v]`` (robust to a few outliers)."""
    values = np.abs(np.asarray(values, dtype=np.float64))
    if values.size == 0:
        return 1.0
    limit = float(np.percentile(values, percentile))
    return limit if limit > 0 else float(values.max()) or 1.0


def hide_axis(ax) -> None:
    """Remove ticks and frame (for image tiles)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def png_bytes(fig, dpi: int = DEFAULT_DPI, compact: bool = True) -> bytes:
    """The figure rendered as PNG bytes.

    With ``compact`` the image is reduced to a 256-colour palette (no dithering): plots have few
    distinct colours, so it looks the same and the file is 2-3 times smaller.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # attaches itself to fig: rendering without any GUI backend
    with styled():
        fig.set_dpi(dpi)
        canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    from PIL import Image

    image = Image.fromarray(rgba[..., :3].copy(), mode="RGB")
    if compact:
        image = image.quantize(256, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=compact)
    return buffer.getvalue()


def png_size(fig, dpi: int = DEFAULT_DPI) -> tuple[int, int]:
    """``(width, height)`` in pixels that :func:`save_png` will write for ``fig`` at ``dpi``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    # ask matplotlib itself: inches through the figure's dpi transform, truncated as Agg does
    old_dpi = fig.dpi
    fig.dpi = dpi
    width, height = FigureCanvasAgg(fig).get_width_height(physical=True)
    fig.dpi = old_dpi
    return int(width), int(height)


def save_png(fig, path: str | os.PathLike, dpi: int = DEFAULT_DPI) -> Path:
    """Atomically write ``fig`` as a PNG to ``path``; returns the path."""
    from digitnet.atomic import write_bytes

    path = Path(path)
    write_bytes(path, png_bytes(fig, dpi))
    return path
