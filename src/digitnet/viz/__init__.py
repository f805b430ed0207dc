"""Pictures of a network and of its training: one module per family, one registry of kinds.

    from digitnet.viz import KINDS, PlotSource, PlotOptions, render, save_png
    source = PlotSource.open("runs/my-run")                 # a run directory or a model file
    fig = render("confusion", source)                       # a matplotlib Figure
    save_png(fig, "confusion.png", dpi=100)                 # atomic write

Modules: architecture, forward, gradients, weights, predictions, curves, confusion, embedding,
robustness, cnn (the draw functions), style (the shared look, PNG output), source (what a picture
is made from), kinds (the registry). The numbers come from :mod:`digitnet.analysis` and
:mod:`digitnet.robustness`. matplotlib is imported only when a picture is drawn.
"""

from __future__ import annotations

from digitnet.viz.kinds import KINDS, PlotKind, PlotOptions, render
from digitnet.viz.source import PlotSource
from digitnet.viz.style import DEFAULT_DPI, png_bytes, png_size, save_png

__all__ = ["DEFAULT_DPI", "KINDS", "PlotKind", "PlotOptions", "PlotSource", "png_bytes", "png_size", "render",
           "save_png"]
