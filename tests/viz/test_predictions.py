import numpy as np

from digitnet.data.batches import images_to_inputs
from digitnet.viz import PlotOptions, png_bytes, png_size, render
from digitnet.viz.style import WRONG_COLOR
from tests.viz.support import assert_drawn, open_png


def _captioned_axes(fig):
    return [ax for ax in fig.axes if ax.get_title() and ax.images]


def test_prediction_grid_shows_what_model_predict_says(source, test_subset):
    options = PlotOptions(index=100, count=30)
    fig = render("predictions", source, options)
    images = test_subset.images[100:130]
    predicted = source.model.predict(images_to_inputs(images, source.model.input_shape))
    axes = _captioned_axes(fig)
    assert len(axes) == 30
    for ax, image, label, guess in zip(axes, images, test_subset.labels[100:130], predicted, strict=True):
        true_line, pred_line = ax.get_title().split("\n")
        assert true_line == f"true {label}"
        assert pred_line.split()[:2] == ["pred", str(guess)]
        np.testing.assert_array_equal(ax.images[0].get_array(), image)
        wrong = label != guess
        assert (ax.title.get_color() == WRONG_COLOR) == wrong
    wrong_count = int(np.count_nonzero(predicted != test_subset.labels[100:130]))
    assert f"{30 - wrong_count} right, {wrong_count} wrong" in fig._suptitle.get_text()
    image = open_png(png_bytes(fig, 40))
    assert image.size == png_size(fig, 40)
    assert_drawn(image)


def test_confident_mistakes_are_wrong_and_sorted_by_confidence(source, test_subset):
    fig = render("mistakes", source, PlotOptions(count=12))
    axes = _captioned_axes(fig)
    probs = source.predictions().probs
    confidences = []
    for ax in axes:
        head, true_line, pred_line = ax.get_title().split("\n")
        index = int(head.lstrip("#"))
        assert true_line == f"true {test_subset.labels[index]}"
        guess = int(pred_line.split()[1])
        assert guess == probs[index].argmax() != test_subset.labels[index]
        confidences.append(probs[index].max())
        np.testing.assert_array_equal(ax.images[0].get_array(), test_subset.images[index])
    assert len(axes) == 12
    assert confidences == sorted(confidences, reverse=True)
    wrong = int(np.count_nonzero(probs.argmax(axis=1) != test_subset.labels))
    assert f"of the {wrong:,} wrong answers on 1,000 test images" in fig._suptitle.get_text()
