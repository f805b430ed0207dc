import numpy as np
import pytest

from digitnet.errors import ConfigError
from digitnet.viz import PlotOptions, png_bytes, png_size, render
from digitnet.viz.cnn import draw_filters
from tests.viz.support import assert_drawn, open_png


def test_filters_show_each_learned_kernel(cnn_source):
    kernels = cnn_source.model.state_dict()["layers.0.weights"]
    fig = render("filters", cnn_source)
    tiles = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in tiles] == [f"filter {j}" for j in range(4)]
    for ax, kernel in zip(tiles, kernels, strict=True):
        np.testing.assert_allclose(ax.images[0].get_array(), kernel[0])
    image = open_png(png_bytes(fig, 40))
    assert image.size == png_size(fig, 40)
    assert_drawn(image)


def test_feature_maps_row_per_layer_with_maps(cnn_source):
    index = 11
    fig = render("feature-maps", cnn_source, PlotOptions(index=index, count=3))
    image = cnn_source.test_data().images[index]
    outputs = cnn_source.model.forward_all(image.reshape(1, 1, 28, 28).astype(np.float32) / 255)
    maps = [ax for ax in fig.axes if ax.images][1:]  # after the input image
    assert len(maps) == 4 * 3  # Conv2D, BatchNorm, ReLU, MaxPool2D; 3 channels each
    for row, layer in enumerate(range(4)):
        for channel in range(3):
            np.testing.assert_allclose(maps[row * 3 + channel].images[0].get_array(), outputs[layer + 1][0, channel],
                                       rtol=1e-5, atol=1e-6)
    assert_drawn(open_png(png_bytes(fig, 40)))


def test_cnn_pictures_refuse_an_mlp(source):
    for kind in ("filters", "feature-maps"):
        with pytest.raises(ConfigError, match="convolutional"):
            render(kind, source)


def test_filters_need_4d_kernels():
    with pytest.raises(ValueError):
        draw_filters(np.zeros((784, 32)))
