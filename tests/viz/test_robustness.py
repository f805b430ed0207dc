import numpy as np

from digitnet.viz import PlotOptions, png_bytes, png_size, render
from digitnet.viz.kinds import robustness_data
from digitnet.viz.robustness import draw_coverage
from tests.viz.support import assert_drawn, open_png


def test_robustness_panels_plot_the_measured_curves(source):
    options = PlotOptions(count=200, index=4)
    curves = robustness_data(source, options)
    fig = render("robustness", source, options)
    curve_axes = [ax for ax in fig.axes if ax.get_lines()]
    assert [ax.get_title() for ax in curve_axes] == ["Gaussian noise", "Rotation", "Stroke thickness"]
    for ax, key in zip(curve_axes, ("noise", "rotation", "thickness"), strict=True):
        line = ax.get_lines()[0]
        np.testing.assert_allclose(line.get_xdata(), curves[key]["levels"])
        np.testing.assert_allclose(line.get_ydata(), curves[key]["accuracy"])
    strips = [ax for ax in fig.axes if ax.images]
    assert len(strips) == 3
    noise_strip = np.asarray(strips[0].images[0].get_array())
    assert noise_strip.shape == (28, len(curves["noise"]["levels"]) * 30 - 2)
    np.testing.assert_array_equal(noise_strip[:, :28], source.test_data().images[4])  # level 0 = undamaged
    image = open_png(png_bytes(fig, 40))
    assert image.size == png_size(fig, 40)
    assert_drawn(image)


def test_coverage_picture_plots_threshold_curves(source):
    fig = render("coverage", source)
    left, right = fig.axes
    coverage_line = right.get_lines()[0]
    assert coverage_line.get_label() == "coverage"
    assert coverage_line.get_ydata()[0] == 1.0  # threshold 0 answers everything
    assert np.all(np.diff(coverage_line.get_ydata()) <= 0)
    assert left.xaxis_inverted()
    assert_drawn(open_png(png_bytes(fig, 40)))


def test_coverage_draws_without_the_exact_curve():
    curve = {"thresholds": [0.0, 0.5, 1.0], "coverage": [1.0, 0.5, 0.0], "accuracy": [0.9, 0.99, None]}
    fig = draw_coverage(curve)
    assert len(fig.axes[0].get_lines()) >= 1
