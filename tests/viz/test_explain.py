import ast
import base64
import html
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import digitnet.explain
import digitnet.viz.explain
from digitnet.explain import explain_image
from digitnet.nn import GELU, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sequential
from digitnet.viz.explain import (
    array_html,
    cells_html,
    colors,
    format_text,
    gradient_of,
    png_data_url,
    render_html,
    settings_text,
)


def digit() -> np.ndarray:
    """A 28x28 uint8 'one': a thick vertical stroke, white on black."""
    image = np.zeros((28, 28), dtype=np.uint8)
    image[4:24, 12:16] = 255
    return image


@pytest.fixture(scope="module")
def mlp_explanation():
    return explain_image(Sequential.from_spec("784-16-10", rng=np.random.default_rng(3)), digit(), 1)


@pytest.fixture(scope="module")
def cnn_explanation():
    rng = np.random.default_rng(5)
    model = Sequential([Conv2D(1, 3, 3, rng=rng), BatchNorm(3), ReLU(), MaxPool2D(2), Flatten(),
                        Dense(3 * 13 * 13, 12, rng=rng), GELU(), Dropout(0.5), Dense(12, 10, rng=rng)],
                       input_shape=(1, 28, 28))
    return explain_image(model, digit(), 1)


def decode(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_colours_diverge_around_zero_or_rise_from_zero():
    signed = colors(np.array([-1.0, 0.0, 1.0]))
    assert signed.dtype == np.uint8
    assert signed.tolist() == [[49, 54, 149], [247, 247, 247], [165, 0, 38]]      # blue, white, red
    assert colors(np.array([0.0, 1.0])).tolist() == [[15, 23, 42], [251, 191, 36]]  # dark to amber
    assert colors(np.array([0.0, 1.0]), signed=True).tolist() == [[247, 247, 247], [165, 0, 38]]
    assert colors(np.zeros((2, 3))).shape == (2, 3, 3)                               # no division by 0


def test_png_data_url_enlarges_each_value_to_a_block():
    rgb = colors(np.arange(6, dtype=float).reshape(2, 3))
    image = decode(png_data_url(rgb, 4, row_scale=5)).convert("RGB")
    assert image.size == (3 * 4, 2 * 5)
    pixels = np.asarray(image)
    assert pixels[0, 0].tolist() == rgb[0, 0].tolist() and pixels[9, 11].tolist() == rgb[1, 2].tolist()


def test_arrays_are_drawn_as_cells_or_pictures_by_what_they_are():
    vector = np.array([-0.5, 0.25, 1.0])
    cells = cells_html(vector)
    assert cells.count("<span ") == 3 and 'title="[1] 0.25"' in cells
    assert array_html(vector[None]) == cells                       # a sample's values, batch axis first
    assert "many" in cells_html(np.ones(200))
    assert 'alt="the input image"' in array_html(np.zeros((1, 784)), role="input")
    assert "shown as 28x28" in array_html(np.zeros((1, 784)))
    assert "first 16 of 20 channels" in array_html(np.zeros((1, 20, 5, 5)))
    assert "values in rows of 64" in array_html(np.zeros((1, 2000)))
    assert "units 0-15 of 20" in array_html(np.zeros((784, 20)), role="param")
    assert "weights.T: one row per unit" in array_html(np.zeros((32, 10)), role="param")
    assert "4 of 4 kernels" in array_html(np.zeros((4, 1, 3, 3)), role="param")


def test_the_page_shows_every_recorded_formula_and_needs_no_files(cnn_explanation):
    e = cnn_explanation
    page = render_html(e, "a test <digit>", summary="the model & its layers")
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "a test &lt;digit&gt;" in page and "the model &amp; its layers" in page
    formulas = [s.formula for s in e.forward] + [f for s in e.backward for f in s.formulas]
    for formula in [*formulas, e.output_formula, e.loss.formula, e.loss.grad_formula, e.update.formula]:
        assert f'<span class="formula">{html.escape(formula)}' in page, formula
    assert html.escape(settings_text(e.update.settings)) in page
    assert page.count('<div class="card"><h3>layer ') == len(e.forward) + len(e.backward)
    assert "GELU" in page and "http://" not in page and "https://" not in page
    for url in page.split('src="')[1:]:
        decode(url.split('"', 1)[0]).verify()                      # every picture is a valid PNG


def test_text_gives_each_gradient_its_shape_and_norm(mlp_explanation):
    e = mlp_explanation
    text = format_text(e, "a test digit", values=4)
    assert text.startswith("digitnet explain: a test digit")
    assert "p = softmax(z2)  [10], sums to 1.0000" in text
    assert "grad_weights = x.T @ grad_z1  [784, 16]  norm " in text
    assert "grad_x = grad_z1 @ weights.T  [1, 784]  norm " in text
    assert "z1[0, :4] = [" in text and "(lr 0.1, momentum 0, nesterov False, weight_decay 0)" in text
    first = e.backward[-1]
    assert gradient_of(first, first.formulas[0]) is first.grads["weights"]
    assert gradient_of(first, first.formulas[-1]) is first.grad_in
    assert gradient_of(first, "not a gradient") is None


def test_presentation_only_reads_the_record():
    """viz.explain draws what digitnet.explain recorded; the library never imports the pictures."""
    def imported(module) -> set[str]:
        tree = ast.parse(Path(module.__file__).read_text())
        return {node.module if isinstance(node, ast.ImportFrom) else alias.name
                for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
                for alias in node.names}

    assert {m for m in imported(digitnet.viz.explain) if m.startswith("digitnet")} == {"digitnet.explain"}
    assert not any(m.startswith("digitnet.viz") for m in imported(digitnet.explain))
