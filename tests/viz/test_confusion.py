import numpy as np

from digitnet.data.batches import images_to_inputs
from digitnet.data.datasets import FASHION_CLASSES
from digitnet.metrics import confusion_matrix
from digitnet.viz import png_bytes, png_size, render
from digitnet.viz.confusion import draw_confusion
from tests.viz.support import assert_drawn, figure_texts, open_png


def test_confusion_matrix_counts_every_test_image_and_its_diagonal_is_the_accuracy(source, test_subset):
    model = source.model
    predicted = model.predict(images_to_inputs(test_subset.images, model.input_shape))
    accuracy = float(np.mean(predicted == test_subset.labels))
    fig = render("confusion", source)
    counts = np.asarray(fig.axes[0].images[0].get_array())
    assert counts.sum() == len(test_subset) == 1000
    assert np.trace(counts) == round(accuracy * len(test_subset))
    np.testing.assert_array_equal(counts.sum(axis=1), np.bincount(test_subset.labels, minlength=10))
    rates = np.asarray(fig.axes[1].images[0].get_array())  # axes: counts, rates, then the colourbars
    np.testing.assert_allclose(rates.sum(axis=1), 1.0)
    assert f"(accuracy {accuracy:.2%})" in fig._suptitle.get_text()
    image = open_png(png_bytes(fig, 40))
    assert image.size == png_size(fig, 40)
    assert_drawn(image)


def test_confusion_uses_the_class_names():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 300)
    matrix = confusion_matrix(labels, np.where(rng.random(300) < 0.8, labels, rng.integers(0, 10, 300)), 10)
    fig = draw_confusion(matrix, FASHION_CLASSES)
    texts = figure_texts(fig)
    assert "Ankle boot" in texts and "T-shirt/top" in texts
    assert str(matrix[0, 0]) in texts
