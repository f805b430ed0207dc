import subprocess
import sys

import matplotlib
import numpy as np
import pytest

from digitnet.atomic import WriteError
from digitnet.viz.style import drawing, new_figure, png_bytes, png_size, save_png, symmetric_limit
from tests.viz.support import assert_drawn, open_png


@drawing
def _line_figure():
    fig = new_figure(4, 3)
    ax = fig.subplots()
    ax.plot([0, 1, 2], [0, 1, 4], lw=3)
    ax.set_title("a line")
    return fig


def test_png_has_exactly_the_figure_size_times_dpi(tmp_path):
    fig = _line_figure()
    for dpi in (40, 100):
        image = open_png(save_png(fig, tmp_path / f"line{dpi}.png", dpi=dpi))
        assert image.size == png_size(fig, dpi) == (4 * dpi, 3 * dpi)
        assert_drawn(image, min_colors=3)


def test_compact_png_is_smaller_and_looks_the_same():
    fig = _line_figure()
    full, compact = open_png(png_bytes(fig, 60, compact=False)), open_png(png_bytes(fig, 60))
    assert len(png_bytes(fig, 60)) < len(png_bytes(fig, 60, compact=False))
    difference = np.abs(np.asarray(full.convert("RGB"), dtype=int) - np.asarray(compact.convert("RGB"), dtype=int))
    assert difference.mean() < 1.0


def test_save_png_is_atomic_and_reports_a_missing_folder(tmp_path):
    with pytest.raises(WriteError, match="does not exist"):
        save_png(_line_figure(), tmp_path / "missing" / "x.png")
    target = tmp_path / "x.png"
    target.write_bytes(b"old")
    save_png(_line_figure(), target, dpi=30)
    assert open_png(target).size == (120, 90)
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temporary file left behind


def test_drawing_does_not_change_global_matplotlib_settings():
    before = dict(matplotlib.rcParams)
    _line_figure()
    assert dict(matplotlib.rcParams) == before


def test_symmetric_limit_ignores_rare_outliers():
    values = np.concatenate([np.linspace(-1, 1, 10_000), [500.0]])
    assert 0.99 < symmetric_limit(values) < 1.01
    assert symmetric_limit(np.zeros(5)) == 1.0


def test_importing_viz_and_the_cli_does_not_import_matplotlib():
    code = ("import sys, digitnet.viz, digitnet.cli; digitnet.cli.build_parser(); "
            "print('matplotlib' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
