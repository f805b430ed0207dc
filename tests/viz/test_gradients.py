import numpy as np

from digitnet.analysis import batch_gradients, loss_for
from digitnet.viz import PlotOptions, png_bytes, png_size, render
from digitnet.viz.gradients import draw_grad_histograms
from tests.viz.support import assert_drawn, open_png


def test_grad_norms_draw_one_log_scale_curve_per_parameter(source):
    norms = source.history().grad_norms
    fig = render("grad-norms", source)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == set(norms) == {f"layers.{i}.{k}" for i in (0, 2, 4) for k in ("weights", "bias")}
    for name, values in norms.items():
        np.testing.assert_allclose(lines[name].get_ydata(), values)
        assert lines[name].get_linestyle() == ("-" if name.endswith("weights") else "--")
    image = open_png(png_bytes(fig, 40))
    assert image.size == png_size(fig, 40)
    assert_drawn(image)


def test_grad_histograms_count_every_weight_gradient(source, test_subset):
    fig = render("grad-histograms", source, PlotOptions(count=64))
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == [f"dL/d layers.{i}.weights" for i in (0, 2, 4)]
    sizes = [784 * 32, 32 * 16, 16 * 10]
    for ax, size in zip(panels, sizes, strict=True):
        assert sum(patch.get_height() for patch in ax.patches) == size
    assert "one batch of 64 test images" in fig._suptitle.get_text()
    grads = batch_gradients(source.model, loss_for(source.model), test_subset.images[:10], test_subset.labels[:10])
    fig = draw_grad_histograms(grads, 10)
    assert_drawn(open_png(png_bytes(fig, 40)))
