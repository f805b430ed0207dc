"""History (digitnet.training.history): what history.json holds, and bad files refused."""

import numpy as np
import pytest

from digitnet.errors import ConfigError
from digitnet.nn import SGD, SoftmaxCrossEntropy
from digitnet.training import History, fit
from tests.training.support import blobs, small_model


def test_history_round_trip(tmp_path):
    history = fit(small_model(), SoftmaxCrossEntropy(), SGD(0.1), blobs(60), blobs(30, 2), epochs=2,
                  batch_size=30, rng=np.random.default_rng(0))
    history.save(tmp_path / "h.json")
    assert History.load(tmp_path / "h.json") == history


def test_missing_or_malformed_history_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no history file"):
        History.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(ConfigError, match="not a valid history.json"):
        History.load(tmp_path / "bad.json")
