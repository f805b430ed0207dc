import numpy as np

from digitnet.nn import softmax
from digitnet.viz import PlotOptions, png_bytes, png_size, render
from tests.viz.support import assert_drawn, open_png


def test_forward_shows_every_layer_and_the_output_probabilities(source, test_subset):
    index = 7
    fig = render("forward", source, PlotOptions(index=index))
    model = source.model
    image = test_subset.images[index]
    outputs = model.forward_all(image.reshape(1, 784).astype(np.float32) / 255)
    strips = [ax for ax in fig.axes if ax.images and ax.get_title(loc="left")]
    assert [ax.get_title(loc="left").split(":")[0] for ax in strips] == [f"layer {i}" for i in range(5)]
    for ax, out in zip(strips, outputs[1:], strict=True):
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array())[0], out[0], rtol=1e-5, atol=1e-6)
    bars = [ax for ax in fig.axes if ax.get_title() == "softmax probabilities"][0]
    heights = [patch.get_width() for patch in bars.patches]
    np.testing.assert_allclose(heights, softmax(outputs[-1])[0], rtol=1e-5, atol=1e-7)
    predicted = int(np.argmax(heights))
    assert f"predicted {predicted}" in fig._suptitle.get_text()
    assert f"true {test_subset.labels[index]}" in fig._suptitle.get_text()
    input_ax = [ax for ax in fig.axes if ax.get_title() == "input image"][0]
    np.testing.assert_array_equal(input_ax.images[0].get_array(), image)
    png = open_png(png_bytes(fig, 40))
    assert png.size == png_size(fig, 40)
    assert_drawn(png)


def test_forward_of_a_cnn_shows_feature_maps(cnn_source):
    fig = render("forward", cnn_source, PlotOptions(index=3))
    titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")]
    assert titles[0].startswith("layer 0: Conv2D 1->4 3x3: convolution")
    assert any("[4x14x14]" in t for t in titles)
    assert not any("Flatten" in t for t in titles)
    assert_drawn(open_png(png_bytes(fig, 40)))
