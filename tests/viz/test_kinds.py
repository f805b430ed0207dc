import pytest

from digitnet.errors import ConfigError
from digitnet.viz import KINDS, PlotOptions, PlotSource, png_bytes, png_size, render
from tests.viz.support import assert_drawn, open_png

MLP_ONLY = {"first-layer"}
CNN_ONLY = {"filters", "feature-maps"}
RUN_DIR_ONLY = {"curves", "grad-norms", "weight-change", "weight-histograms"}


def test_registry_names_every_picture_family():
    assert set(KINDS) == {"architecture", "curves", "forward", "grad-norms", "grad-histograms", "weight-change",
                          "weight-histograms", "first-layer", "predictions", "mistakes", "confusion", "embedding",
                          "robustness", "coverage", "filters", "feature-maps"}
    for name, kind in KINDS.items():
        assert kind.name == name and kind.title and kind.description


@pytest.mark.parametrize("kind", sorted(set(KINDS) - CNN_ONLY))
def test_every_mlp_picture_renders_from_a_real_run(kind, source):
    assert KINDS[kind].unavailable(source) is None
    fig = render(kind, source, PlotOptions(count=100 if kind == "robustness" else None))
    image = open_png(png_bytes(fig, 30))
    assert image.size == png_size(fig, 30)
    assert min(image.size) >= 60
    assert_drawn(image)


@pytest.mark.parametrize("kind", sorted(CNN_ONLY | {"architecture", "forward", "embedding", "confusion"}))
def test_cnn_pictures_render_from_a_trained_cnn(kind, cnn_source):
    fig = render(kind, cnn_source, PlotOptions(index=2))
    image = open_png(png_bytes(fig, 30))
    assert image.size == png_size(fig, 30)
    assert_drawn(image)


def test_a_model_file_cannot_draw_run_dir_pictures_and_says_why(run_dir, test_subset):
    bare = PlotSource.open(run_dir / "model.safetensors", test=test_subset)
    for kind in RUN_DIR_ONLY:
        assert "run directory" in KINDS[kind].unavailable(bare)
        with pytest.raises(ConfigError, match="needs a run directory"):
            render(kind, bare)
    assert KINDS["confusion"].unavailable(bare) is None


def test_cnn_cannot_draw_mlp_only_pictures(cnn_source):
    assert "Dense" in KINDS["first-layer"].unavailable(cnn_source)
    with pytest.raises(ConfigError, match="cannot draw 'first-layer'"):
        render("first-layer", cnn_source)


def test_bad_choices_are_config_errors(source):
    with pytest.raises(ConfigError, match="unknown picture 'pie'"):
        render("pie", source)
    with pytest.raises(ConfigError, match="outside the test set"):
        render("forward", source, PlotOptions(index=1000))
    with pytest.raises(ConfigError, match="layer 1 has no weights"):
        render("weight-change", source, PlotOptions(layer=1))
    with pytest.raises(ConfigError, match="--count"):
        render("predictions", source, PlotOptions(count=0))
