import numpy as np

from digitnet.io import load_model
from digitnet.viz import PlotOptions, png_bytes, png_size, render
from digitnet.viz.weights import as_unit_rows
from tests.viz.support import assert_drawn, open_png


def test_weight_change_shows_start_end_and_difference(source, run_dir):
    initial = load_model(run_dir / "initial.safetensors").model.state_dict()
    final = source.model.state_dict()
    fig = render("weight-change", source, PlotOptions(layer=2))
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["At initialisation", "After training", "Change (after - before)"]
    expected = [initial["layers.2.weights"].T, final["layers.2.weights"].T,
                (final["layers.2.weights"] - initial["layers.2.weights"]).T]
    for ax, matrix in zip(panels, expected, strict=True):
        np.testing.assert_allclose(ax.images[0].get_array(), matrix, rtol=1e-6)
    assert not np.allclose(expected[2], 0)  # training did move the weights
    change = np.linalg.norm(expected[2]) / np.linalg.norm(expected[0])
    assert f"weights moved by {change:.0%} of their initial norm" in fig._suptitle.get_text()
    image = open_png(png_bytes(fig, 40))
    assert image.size == png_size(fig, 40)
    assert_drawn(image)


def test_weight_histograms_hold_every_weight_at_start_and_end(source):
    fig = render("weight-histograms", source)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["layers.0.weights (25,088 values)", "layers.2.weights (512 values)",
                                                 "layers.4.weights (160 values)"]
    for ax, size in zip(panels, (25088, 512, 160), strict=True):
        heights = np.array([patch.get_height() for patch in ax.patches])
        assert heights.sum() == 2 * size  # start and end histograms
    assert_drawn(open_png(png_bytes(fig, 40)))


def test_first_layer_tiles_are_each_units_weights_as_an_image(source):
    fig = render("first-layer", source, PlotOptions(count=12))
    weights = source.model.state_dict()["layers.0.weights"]
    tiles = [ax for ax in fig.axes if ax.images and ax.get_title().startswith("unit ")]
    assert len(tiles) == 12
    for j, ax in enumerate(tiles):
        assert ax.get_title() == f"unit {j}"
        np.testing.assert_array_equal(ax.images[0].get_array(), weights[:, j].reshape(28, 28))
        low, high = ax.images[0].get_clim()
        assert low == -high  # diverging scale centred on 0
    assert "12 of 32 units" in fig._suptitle.get_text()
    image = open_png(png_bytes(fig, 40))
    assert image.size == png_size(fig, 40)
    assert_drawn(image)


def test_unit_rows_of_dense_and_conv_weights():
    assert as_unit_rows(np.zeros((784, 32))).shape == (32, 784)
    assert as_unit_rows(np.zeros((8, 3, 5, 5))).shape == (8, 75)


def test_weight_change_of_convolution_kernels():
    from digitnet.analysis import weight_change
    from digitnet.viz.weights import draw_weight_change

    rng = np.random.default_rng(0)
    before = {"layers.0.weights": rng.normal(size=(8, 1, 3, 3)).astype(np.float32)}
    after = {"layers.0.weights": before["layers.0.weights"] * 2}
    fig = draw_weight_change(weight_change(before, after, "layers.0.weights"))
    panels = [ax for ax in fig.axes if ax.images]
    np.testing.assert_allclose(panels[2].images[0].get_array(), before["layers.0.weights"].reshape(8, 9))
    assert "moved by 100% of their initial norm" in fig._suptitle.get_text()
