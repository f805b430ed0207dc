import numpy as np
import pytest

from digitnet.metrics import accuracy, classification_report, confusion_matrix, per_class_report


def test_confusion_matrix_counts_rows_true_columns_predicted():
    y_true = np.array([0, 0, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 2, 0, 2])
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert cm.sum() == 6
    assert np.trace(cm) / cm.sum() == pytest.approx(accuracy(y_true, y_pred))


def test_per_class_precision_recall_f1_by_hand():
    cm = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    rows = per_class_report(cm, ["a", "b", "c"])
    # class a: predicted a twice (1 right) -> precision 1/2; true a twice (1 found) -> recall 1/2
    assert rows[0]["precision"] == pytest.approx(0.5)
    assert rows[0]["recall"] == pytest.approx(0.5)
    assert rows[0]["f1"] == pytest.approx(0.5)
    # class b: precision 1/2, recall 1/1 -> f1 = 2/3
    assert rows[1]["f1"] == pytest.approx(2 / 3)
    # class c: precision 2/2, recall 2/3
    assert rows[2]["precision"] == pytest.approx(1.0)
    assert rows[2]["recall"] == pytest.approx(2 / 3)
    assert [r["support"] for r in rows] == [2, 1, 3]


def test_class_never_predicted_has_zero_precision_not_nan():
    rows = per_class_report(np.array([[2, 0], [1, 0]]), ["x", "y"])
    assert rows[1]["precision"] == 0.0 and rows[1]["recall"] == 0.0 and rows[1]["f1"] == 0.0


def test_classification_report_is_json_ready():
    import json

    report = classification_report(np.array([0, 1, 1]), np.array([0, 1, 0]), ["0", "1"])
    assert report["accuracy"] == pytest.approx(2 / 3)
    assert report["count"] == 3
    json.dumps(report)
