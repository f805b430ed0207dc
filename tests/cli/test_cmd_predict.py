import json
from pathlib import Path

from digitnet.io import load_model
from digitnet.predict import predict_proba_images
from tests.cli.conftest import run_cli


def write_kaggle_csv(path, images, labels=None):
    header = (["label"] if labels is not None else []) + [f"pixel{i}" for i in range(784)]
    rows = [",".join(header)]
    for i, image in enumerate(images):
        values = ([str(int(labels[i]))] if labels is not None else []) + [str(int(v)) for v in image.reshape(-1)]
        rows.append(",".join(values))
    path.write_text("\n".join(rows) + "\n")


def test_predict_json_lines_match_the_model(small_run, mnist_test, tmp_path):
    csv = tmp_path / "test.csv"
    write_kaggle_csv(csv, mnist_test.images[:20])
    result = run_cli("predict", small_run, csv, "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 20
    probs = predict_proba_images(load_model(small_run).model, mnist_test.images[:20])
    for i, row in enumerate(rows):
        assert row["input"] == str(csv) and row["index"] == i
        assert row["label"] == int(probs[i].argmax())
        assert abs(row["confidence"] - float(probs[i].max())) < 1e-6
        assert len(row["top3"]) == 3 and row["top3"][0]["label"] == row["label"]
        assert row["top3"][0]["probability"] >= row["top3"][1]["probability"] >= row["top3"][2]["probability"]


def test_predict_text_output_and_limit(small_run, mnist_test, tmp_path):
    csv = tmp_path / "mnist_test.csv"  # headerless layout: label then 784 pixels
    rows = [",".join([str(int(mnist_test.labels[i]))] + [str(int(v)) for v in mnist_test.images[i].reshape(-1)])
            for i in range(10)]
    csv.write_text("\n".join(rows) + "\n")
    result = run_cli("predict", small_run, csv, "--limit", "4")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and lines[0].startswith(f"{csv}[0]: ") and "top-3:" in lines[0]


def test_predict_on_a_corrupt_file_is_a_clear_error(small_run, tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("label,pixel0\n1,2,3\n")
    result = run_cli("predict", small_run, csv)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("digitnet predict: error:")


def _digit_png(path, image, scale=8, invert=True):
    """Save an MNIST digit as a big black-on-white PNG, as a user's drawing would look."""
    from PIL import Image

    big = Image.fromarray(255 - image if invert else image).resize((28 * scale, 28 * scale))
    big.save(path)
    return path


def test_predict_images_folder_json_digits_and_show(small_run, mnist_test, tmp_path):
    from PIL import Image

    folder = tmp_path / "mine"
    folder.mkdir()
    for i in range(3):
        _digit_png(folder / f"d{i}.png", mnist_test.images[i])
    result = run_cli("predict", small_run, folder, "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["input"]).name for r in rows] == ["d0.png", "d1.png", "d2.png"]
    assert sum(r["label"] == int(mnist_test.labels[i]) for i, r in enumerate(rows)) >= 2
    assert all(len(r["top3"]) == 3 for r in rows)

    # a written number: three digits side by side on one white sheet
    sheet = Image.new("L", (3 * 140, 160), 255)
    for i in range(3):
        sheet.paste(Image.fromarray(255 - mnist_test.images[i]).resize((112, 112)), (10 + 140 * i, 20))
    sheet.save(tmp_path / "number.png")
    show = tmp_path / "show.png"
    result = run_cli("predict", small_run, tmp_path / "number.png", "--digits", "--show", show)
    assert result.returncode == 0, result.stderr
    assert "number" in result.stdout and f"saved: {show}" in result.stdout
    with Image.open(show) as picture:
        assert picture.format == "PNG" and picture.size[0] > 200


def test_predict_on_a_non_image_file_is_a_clear_error(small_run, tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"this is not a png")
    result = run_cli("predict", small_run, fake)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_a_batch_keeps_going_past_a_corrupt_and_a_blank_image(small_run, mnist_test, tmp_path):
    """One corrupt and one blank image among good ones: the good ones are all predicted, the two
    failures are reported (one stderr line each, and rows with an "error" in --json), exit code 2."""
    from PIL import Image

    folder = tmp_path / "batch"
    folder.mkdir()
    for i in range(4):
        _digit_png(folder / f"d{i}.png", mnist_test.images[i])
    good = _digit_png(folder / "d0.png", mnist_test.images[0]).read_bytes()
    (folder / "d1-corrupt.png").write_bytes(good[: len(good) // 3])  # sorts between the good ones
    Image.new("L", (120, 120), 255).save(folder / "d2-blank.png")

    result = run_cli("predict", small_run, folder)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [str(folder / f"d{i}.png") for i in range(4)]
    assert sum(f": {int(mnist_test.labels[i])} (" in line for i, line in enumerate(lines)) >= 3
    errors = [line for line in result.stderr.splitlines() if line.startswith("digitnet predict: error:")]
    assert len(errors) == 2
    assert "d1-corrupt.png is a corrupt or truncated image" in errors[0]
    assert "d2-blank.png: no ink found" in errors[1]
    assert result.stderr.splitlines()[-1] == "digitnet predict: 2 of 6 images could not be read"

    show = tmp_path / "show.png"
    result = run_cli("predict", small_run, folder, "--json", "--show", show)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(row["input"]).name for row in rows] == \
        ["d0.png", "d1-corrupt.png", "d1.png", "d2-blank.png", "d2.png", "d3.png"]
    assert [("error" in row, "label" in row) for row in rows] == \
        [(False, True), (True, False), (False, True), (True, False), (False, True), (False, True)]
    assert "corrupt" in rows[1]["error"] and "no ink found" in rows[3]["error"]
    with Image.open(show) as picture:
        assert picture.format == "PNG"


def test_one_good_image_exits_0_and_one_missing_among_good_exits_2(small_run, mnist_test, tmp_path):
    good = _digit_png(tmp_path / "good.png", mnist_test.images[0])
    result = run_cli("predict", small_run, good)
    assert result.returncode == 0 and result.stderr == ""
    result = run_cli("predict", small_run, good, tmp_path / "missing.png")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stdout.startswith(f"{good}: ")
    assert "image file not found" in result.stderr and "1 of 2 images could not be read" in result.stderr
