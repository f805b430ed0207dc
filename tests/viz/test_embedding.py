import numpy as np

from digitnet.viz import PlotOptions, png_bytes, png_size, render
from tests.viz.support import assert_drawn, figure_texts, open_png


def test_embedding_scatters_every_sampled_image_once_coloured_by_class(source):
    fig = render("embedding", source, PlotOptions(count=400))
    ax = fig.axes[0]
    collections = ax.collections
    points = np.concatenate([c.get_offsets() for c in collections])
    assert points.shape == (400, 2)
    np.testing.assert_allclose(points.mean(axis=0), 0.0, atol=1e-6)  # PCA output is centred
    assert len(collections) == 10 and len(ax.get_legend().get_texts()) == 10
    assert "layer 3 (ReLU)" in ax.get_title()  # the 16-unit hidden layer of 784-32-16-10
    assert any(t.startswith("principal component 1 (") for t in figure_texts(fig))
    image = open_png(png_bytes(fig, 40))
    assert image.size == png_size(fig, 40)
    assert_drawn(image)
