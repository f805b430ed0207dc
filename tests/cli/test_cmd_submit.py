import numpy as np

from digitnet.io import load_model
from digitnet.predict import predict_proba_images
from tests.cli.conftest import run_cli
from tests.cli.test_cmd_predict import write_kaggle_csv


def test_submit_writes_kaggle_format(small_run, mnist_test, tmp_path):
    csv = tmp_path / "test.csv"
    write_kaggle_csv(csv, mnist_test.images[:30])
    out = tmp_path / "submission.csv"
    result = run_cli("submit", small_run, csv, "-o", out)
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == "ImageId,Label" and len(lines) == 31
    expected = predict_proba_images(load_model(small_run).model, mnist_test.images[:30]).argmax(axis=1)
    assert [int(line.split(",")[1]) for line in lines[1:]] == expected.tolist()
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(1, 31))
    assert np.mean(expected == mnist_test.labels[:30]) > 0.7
