"""Progress output (digitnet.training.progress)."""

import io

import numpy as np

from digitnet.nn import SGD, SoftmaxCrossEntropy
from digitnet.training import ProgressBar, fit, format_epoch
from tests.training.support import blobs, small_model


def test_progress_off_a_tty_prints_one_line_per_epoch():
    stream = io.StringIO()
    fit(small_model(), SoftmaxCrossEntropy(), SGD(0.1), blobs(60), epochs=3, batch_size=30,
        rng=np.random.default_rng(0), callbacks=[ProgressBar(stream=stream, tty=False)])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("epoch 1/3: loss ")


def test_format_epoch_shows_validation_only_when_there_is_some():
    logs = {"epoch": 2, "train_loss": 0.12345, "train_accuracy": 0.965, "val_loss": None, "val_accuracy": None,
            "lr": 0.1, "seconds": 0.314}
    assert format_epoch(logs, 10) == "epoch 3/10: loss 0.1235 acc 0.9650 | lr 0.1 | 0.31s"
    logs.update(val_loss=0.2, val_accuracy=0.95)
    assert "| val_loss 0.2000 val_acc 0.9500 |" in format_epoch(logs, 10)
