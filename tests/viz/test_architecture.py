import pytest

from digitnet.nn import Sequential
from digitnet.viz import png_bytes, png_size, render
from digitnet.viz.architecture import draw_architecture, is_mlp, shown_units
from tests.viz.support import assert_drawn, figure_texts, open_png


def test_shown_units_samples_wide_layers():
    assert shown_units(4) == [0, 1, 2, 3]
    assert shown_units(128) == [0, 1, 2, 3, 4, 123, 124, 125, 126, 127]


def test_mlp_diagram_names_sizes_activations_and_parameter_counts(source):
    fig = render("architecture", source)
    text = "\n".join(figure_texts(fig))
    for expected in ("784 inputs (pixels)\n(10 shown)", "32 units\n(10 shown)", "16 units\n(10 shown)",
                     "10 outputs", "784x32 weights\n+ 32 biases\n= 25,120 params", "= 528 params", "= 170 params",
                     "ReLU", "softmax", "25,818 parameters"):
        assert expected in text, expected
    # 10 + 10 + 10 + 10 neurons drawn
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == 40
    image = open_png(png_bytes(fig, 40))
    assert image.size == png_size(fig, 40)
    assert_drawn(image)


def test_small_layers_are_drawn_whole_with_class_names():
    model = Sequential.from_spec("6-4-3", activation="tanh")
    fig = draw_architecture(model, ["cat", "dog", "bird"])
    texts = figure_texts(fig)
    assert {"cat", "dog", "bird", "Tanh"} <= set(texts)
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == 13
    assert not any("shown" in t for t in texts)


@pytest.mark.parametrize("spec", ["784-10", "784-300-100-10"])
def test_mlp_detection(spec):
    assert is_mlp(Sequential.from_spec(spec))


def test_cnn_is_drawn_as_boxes_with_output_shapes(cnn_source):
    assert not is_mlp(cnn_source.model)
    fig = render("architecture", cnn_source)
    text = "\n".join(figure_texts(fig))
    for expected in ("Conv2D\n1->4 3x3", "4x28x28", "MaxPool2D\n2x2", "4x14x14", "784", "40 params",
                     "12,560 params", "Input"):
        assert expected in text, expected
    assert_drawn(open_png(png_bytes(fig, 40)))
