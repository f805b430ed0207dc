import json

import numpy as np

from digitnet.io import load_model
from tests.cli.conftest import run_cli


def test_evaluate_prints_accuracy_per_class_table_and_confusion_matrix(small_run):
    result = run_cli("evaluate", small_run)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    accuracy = load_model(small_run).metrics["test_accuracy"]
    assert f"accuracy: {accuracy * 100:.2f}%" in out
    assert "precision  recall" in out and "confusion matrix" in out
    assert len([line for line in out.splitlines() if line[:1].isdigit()]) >= 20  # 10 metric rows + 10 matrix rows


def test_evaluate_json_is_consistent(small_run):
    result = run_cli("evaluate", small_run / "model.safetensors", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 10000 == report["count"]
    assert np.trace(matrix) == round(report["accuracy"] * 10000)
    assert report["accuracy"] == load_model(small_run).metrics["test_accuracy"]
    assert abs(report["loss"] - load_model(small_run).metrics["test_loss"]) < 1e-4
    assert [row["support"] for row in report["per_class"]] == matrix.sum(axis=1).tolist()


def test_evaluate_min_confidence_reports_coverage(small_run):
    result = run_cli("evaluate", small_run, "--json", "--min-confidence", "0.9")
    report = json.loads(result.stdout)
    mc = report["min_confidence"]
    assert 0 < mc["coverage"] < 1
    assert mc["accuracy_on_covered"] > report["accuracy"]
    assert mc["not_sure"] == round((1 - mc["coverage"]) * 10000)


def test_evaluate_bad_model_file_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model at all")
    result = run_cli("evaluate", bad)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = run_cli("evaluate", tmp_path / "missing.safetensors")
    assert result.returncode == 2 and "not found" in result.stderr
