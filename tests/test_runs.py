import numpy as np
import pytest

import digitnet.kernels
from digitnet.config import TrainConfig, load_preset
from digitnet.errors import ConfigError
from digitnet.io import load_model
from digitnet.runs import read_run_config, run_training


@pytest.mark.slow
def test_run_training_writes_a_run_and_evaluates_on_test(mnist_path, tmp_path):
    config = load_preset("seed-002").replace(epochs=2, limit_train=5000, seed=3)
    result = run_training(config, tmp_path, quiet=True, log=lambda m: None)
    assert result.metrics["test_count"] == 10000
    assert 0.78 < result.metrics["test_accuracy"] <= 1  # 80 SGD steps: measured 0.83
    assert read_run_config(tmp_path) == config
    loaded = load_model(tmp_path)
    assert loaded.metrics == pytest.approx(result.metrics)
    assert loaded.training["arch"] == "784-128-64-10"
    assert np.array_equal(loaded.model.state_dict()["layers.0.weights"], result.model.state_dict()["layers.0.weights"])


def test_read_run_config_of_a_non_run_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not a run directory"):
        read_run_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_run_config(tmp_path)


@pytest.mark.slow
def test_cnn_preset_trains_on_a_real_subset(mnist_path, tmp_path):
    """The cnn-fast architecture, with augmentation, on 4,000 images: well past any chance level."""
    config = load_preset("cnn-fast").replace(epochs=2, limit_train=4000, seed=0,
                                             augment={"shift": 1.0, "rotate": 5.0, "scale": 0.05})
    result = run_training(config, tmp_path, quiet=True, log=lambda m: None)
    assert result.metrics["test_accuracy"] > 0.90  # measured 0.927 (chance: 0.10)
    loaded = load_model(tmp_path)
    assert loaded.model.input_shape == (1, 28, 28)
    assert loaded.metrics["test_accuracy"] == result.metrics["test_accuracy"]


def test_a_bad_setting_fails_before_any_data_is_loaded(tmp_path):
    """No data folder at all: the error is about the setting, and no run directory is created."""
    out = tmp_path / "run"
    nowhere = str(tmp_path / "no-data")
    with pytest.raises(ConfigError, match="784-x-10"):
        run_training(TrainConfig(arch="784-x-10", data_dir=nowhere), out, quiet=True, log=lambda m: None)
    with pytest.raises(ConfigError, match="unknown optimizer 'lion'"):
        run_training(TrainConfig(optimizer="lion", data_dir=nowhere), out, quiet=True, log=lambda m: None)
    with pytest.raises(ConfigError, match="unknown kernels 'bogus'"):
        run_training(TrainConfig(data_dir=nowhere), out, quiet=True, log=lambda m: None, kernels="bogus")
    assert not out.exists()


def test_the_kernels_environment_variable_is_honoured(mnist_path, tmp_path, monkeypatch):
    def refuse(*args):
        raise AssertionError("speed_up was called")

    monkeypatch.setattr(digitnet.kernels, "speed_up", refuse)
    monkeypatch.setenv("DIGITNET_KERNELS", "reference")
    config = TrainConfig(arch="784-16-10", epochs=1, limit_train=500, seed=1)
    result = run_training(config, tmp_path, quiet=True, log=lambda m: None)
    assert result.metrics["epochs_run"] == 1
    assert "kernels" not in read_run_config(tmp_path).to_dict()   # a runtime choice, not part of the run

