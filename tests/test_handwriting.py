"""predict_images / read_number / save_show_png on image files made from real MNIST test digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from digitnet.errors import ConfigError, ImageError
from digitnet.handwriting import (
    classify,
    join_labels,
    predict_images,
    read_number,
    results_to_json,
    save_show_png,
)
from tests.web.support import encode, mnist_split, render, row_of_digits, trained_model_file


@pytest.fixture(scope="module")
def loaded(mnist_path, tmp_path_factory):
    from digitnet.io import load_model

    return load_model(trained_model_file(tmp_path_factory.mktemp("model")))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Three photos of single digits (labels 7, 2, 1: the first MNIST test digits) and a number."""
    folder = tmp_path_factory.mktemp("photos")
    images, labels = mnist_split("test")
    for k in range(3):
        (folder / f"digit{k}.jpg").write_bytes(encode(render(images[k]), "JPEG", quality=85))
    (folder / "number.png").write_bytes(encode(row_of_digits([images[k] for k in range(3)])))
    return folder, [str(labels[k]) for k in range(3)]


def test_predict_images_single_digits(loaded, files):
    folder, labels = files
    results = predict_images(loaded, str(folder / "digit*.jpg"))
    assert [r["class_name"] for r in results] == labels
    for result in results:
        assert result["image"].shape == (28, 28) and result["image"].dtype == np.uint8
        assert len(result["probabilities"]) == 10
        assert abs(sum(result["probabilities"]) - 1) < 1e-4
        assert result["confidence"] == max(result["probabilities"])
        assert [t["label"] for t in result["top"]][0] == result["label"]
        assert len(result["top"]) == 3
        assert result["top"][0]["probability"] >= result["top"][1]["probability"] >= result["top"][2]["probability"]
        assert max(result["original"].shape) <= 160


def test_predict_images_digits_mode(loaded, files):
    folder, labels = files
    (result,) = predict_images(loaded, folder / "number.png", digits=True)
    assert result["number"] == "".join(labels)
    assert len(result["digits"]) == 3
    assert result["confidence"] == pytest.approx(np.prod([d["confidence"] for d in result["digits"]]))
    text, probabilities = read_number(loaded, folder / "number.png")
    assert text == "".join(labels) and probabilities.shape == (3, 10)


def test_errors_raise_or_are_recorded(loaded, files, tmp_path):
    folder, _ = files
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    blank = tmp_path / "blank.png"
    blank.write_bytes(encode(np.full((30, 30), 255, dtype=np.uint8)))
    with pytest.raises(ImageError, match="bad.png"):
        predict_images(loaded, [bad])
    results = predict_images(loaded, [folder / "digit0.jpg", bad, blank], on_error="record")
    assert "label" in results[0]
    assert "bad.png" in results[1]["error"] and "not a PNG" in results[1]["error"]
    assert "blank.png" in results[2]["error"] and "no ink" in results[2]["error"]
    with pytest.raises(ConfigError):
        predict_images(loaded, [bad], on_error="ignore")


def test_results_to_json_drops_arrays(loaded, files):
    folder, _ = files
    results = predict_images(loaded, [folder / "digit0.jpg", folder / "number.png"])
    text = json.dumps(results_to_json(results))
    document = json.loads(text)
    assert "image" not in document[0] and "original" not in document[0] and "classes" not in document[0]
    assert document[0]["class_name"] == "7"
    digits = results_to_json(predict_images(loaded, folder / "number.png", digits=True))
    assert all("image" not in d for d in digits[0]["digits"])


def test_save_show_png(loaded, files, tmp_path):
    folder, _ = files
    results = predict_images(loaded, folder / "digit*.jpg")
    results += predict_images(loaded, folder / "number.png", digits=True)
    results.append({"file": "broken.png", "error": "broken.png is not a PNG, JPEG, BMP, GIF or WebP image"})
    out = save_show_png(results, tmp_path / "show.png")
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.width > 400 and image.height > 4 * 150
    with pytest.raises(ConfigError):
        save_show_png([], tmp_path / "none.png")


def test_classify_bare_model_and_classes(loaded):
    images, labels = mnist_split("test")
    probabilities = classify(loaded.model, images[:50])
    assert probabilities.shape == (50, 10)
    assert (probabilities.argmax(axis=1) == labels[:50]).mean() > 0.9
    assert classify(loaded, images[0]).shape == (1, 10)


def test_join_labels():
    assert join_labels(["4", "0", "9", "6"]) == "4096"
    assert join_labels(["Sneaker", "Bag"]) == "Sneaker Bag"
