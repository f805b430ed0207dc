"""predict_images / read_number / save_show_png on image files made from real MNIST test digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from digitnet.errors import ConfigError, ImageError
from digitnet.handwriting import (
    classify,
    iter_predictions,
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
    assert [r["class"] for r in results] == labels
    assert [r["input"] for r in results] == [str(folder / f"digit{k}.jpg") for k in range(3)]
    json.dumps(results)  # JSON-ready: what `digitnet predict --json` prints
    for result in results:
        assert set(result) == {"input", "label", "class", "confidence", "top3", "probabilities"}
        assert len(result["probabilities"]) == 10
        assert abs(sum(result["probabilities"]) - 1) < 1e-4
        assert result["confidence"] == max(result["probabilities"])
        assert result["top3"][0] == {"label": result["label"], "class": result["class"],
                                     "probability": result["confidence"]}
        assert len(result["top3"]) == 3
        assert result["top3"][0]["probability"] >= result["top3"][1]["probability"] >= \
            result["top3"][2]["probability"]


def test_keep_images(loaded, files):
    folder, _ = files
    (row,) = predict_images(loaded, folder / "digit0.jpg", keep_images=True)
    assert row["image"].shape == (28, 28) and row["image"].dtype == np.uint8 and row["image"].max() == 255
    assert max(row["original"].shape) <= 160
    assert row["classes"] == [str(d) for d in range(10)]


def test_predict_images_digits_mode(loaded, files):
    folder, labels = files
    (result,) = predict_images(loaded, folder / "number.png", digits=True)
    assert result["number"] == "".join(labels)
    assert [d["class"] for d in result["digits"]] == labels
    assert result["confidence"] == pytest.approx(np.prod([d["confidence"] for d in result["digits"]]))
    json.dumps(result)
    (kept,) = predict_images(loaded, folder / "number.png", digits=True, keep_images=True)
    assert all(d["image"].shape == (28, 28) for d in kept["digits"])
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
    assert results[1]["input"] == str(bad)
    assert "bad.png" in results[1]["error"] and "not a PNG" in results[1]["error"]
    assert "blank.png" in results[2]["error"] and "no ink" in results[2]["error"]
    with pytest.raises(ConfigError):
        predict_images(loaded, [bad], on_error="ignore")


def test_several_files_keep_going_by_default(loaded, files, tmp_path):
    """More than one file: an unreadable one is a row with an error and the others are predicted;
    one file alone, or on_error="raise", still raises."""
    folder, labels = files
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    blank = tmp_path / "blank.png"
    blank.write_bytes(encode(np.full((30, 30), 255, dtype=np.uint8)))
    missing = tmp_path / "missing.png"
    rows = predict_images(loaded, [folder / "digit0.jpg", bad, blank, missing, folder / "digit1.jpg"])
    assert [row.get("class") for row in rows] == [labels[0], None, None, None, labels[1]]
    assert [row["input"] for row in rows[1:4]] == [str(bad), str(blank), str(missing)]
    assert "not a PNG" in rows[1]["error"] and "no ink" in rows[2]["error"] and "not found" in rows[3]["error"]
    assert all(set(row) == {"input", "error"} for row in rows[1:4])
    json.dumps(rows)
    (tmp_path / "digits").mkdir()
    for name in ("a.jpg", "b.png"):
        (tmp_path / "digits" / name).write_bytes((folder / "digit0.jpg").read_bytes() if name == "a.jpg"
                                                 else b"broken")
    rows = predict_images(loaded, tmp_path / "digits")  # one folder, two files: keeps going too
    assert rows[0]["class"] == labels[0] and "error" in rows[1]
    with pytest.raises(ImageError, match="bad.png"):
        predict_images(loaded, bad)
    with pytest.raises(ImageError, match="bad.png"):
        predict_images(loaded, [folder / "digit0.jpg", bad], on_error="raise")
    out = tmp_path / "show.png"
    predict_images(loaded, [folder / "digit0.jpg", bad], show=out)
    with Image.open(out) as image:
        assert image.format == "PNG"


def test_iter_predictions_yields_one_row_at_a_time(loaded, files, tmp_path):
    folder, labels = files
    rows = iter_predictions(loaded, [folder / "digit0.jpg", tmp_path / "missing.png"])
    first = next(rows)
    assert first["class"] == labels[0] and first["image"].shape == (28, 28)
    assert "not found" in next(rows)["error"]
    assert next(rows, None) is None


def test_results_to_json_drops_arrays(loaded, files):
    folder, _ = files
    rows = predict_images(loaded, [folder / "digit0.jpg", folder / "number.png"], keep_images=True)
    document = json.loads(json.dumps(results_to_json(rows)))
    assert "image" not in document[0] and "original" not in document[0] and "classes" not in document[0]
    assert document[0]["class"] == "7"


def test_show_png(loaded, files, tmp_path):
    folder, _ = files
    out = tmp_path / "show.png"
    rows = predict_images(loaded, folder / "digit*.jpg", show=out)
    assert len(rows) == 3 and "image" not in rows[0]
    with Image.open(out) as image:
        assert image.format == "PNG" and image.height > 3 * 150
    rows = predict_images(loaded, folder / "digit*.jpg", keep_images=True)
    rows += predict_images(loaded, folder / "number.png", digits=True, keep_images=True)
    rows.append({"input": "broken.png", "error": "broken.png is not a PNG, JPEG, BMP, GIF or WebP image"})
    mixed = save_show_png(rows, tmp_path / "mixed.png")
    with Image.open(mixed) as image:
        assert image.width > 400 and image.height > 5 * 150
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
