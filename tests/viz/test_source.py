import json

import numpy as np
import pytest

from digitnet.data.dataset import Dataset
from digitnet.errors import ConfigError, ModelFileError
from digitnet.viz import PlotSource


def test_run_directory_gives_history_initial_weights_and_config(run_dir, test_subset):
    source = PlotSource.open(run_dir, test=test_subset)
    assert source.run_dir == run_dir
    assert len(source.history()) == 2
    assert set(source.initial_state()) == set(source.model.state_dict())
    assert source.config["arch"] == "784-32-16-10"
    assert source.dataset_name == "mnist"
    assert source.predictions() is source.predictions()  # computed once


def test_model_file_has_no_run_files(run_dir, test_subset):
    source = PlotSource.open(run_dir / "model.safetensors", test=test_subset)
    assert source.run_dir is None
    with pytest.raises(ConfigError, match="needs a run directory"):
        source.history("the curves")
    assert source.config["arch"] == "784-32-16-10"  # from the model's training metadata


def test_missing_pieces_are_clear_errors(run_dir, tmp_path, test_subset):
    with pytest.raises(ConfigError, match="does not exist"):
        PlotSource.open(tmp_path / "nowhere")
    with pytest.raises(ModelFileError):
        PlotSource.open(tmp_path)  # a directory without model.safetensors
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes((run_dir / "model.safetensors").read_bytes())
    (partial / "config.json").write_text(json.dumps({"dataset": "fashion-mnist"}))
    source = PlotSource.open(partial, test=test_subset)
    assert source.dataset_name == "fashion-mnist"
    assert PlotSource.open(partial, dataset="mnist").dataset_name == "mnist"
    with pytest.raises(ConfigError, match="needs initial.safetensors"):
        source.initial_state("the weight-change picture")


def test_test_data_must_be_labelled_and_match_the_classes(run_dir):
    unlabelled = Dataset(np.zeros((3, 28, 28), np.uint8), None, name="kaggle")
    with pytest.raises(ConfigError, match="has no labels"):
        PlotSource.open(run_dir, test=unlabelled).test_data()
    three = Dataset(np.zeros((3, 28, 28), np.uint8), np.array([0, 1, 2], np.uint8), classes=["a", "b", "c"])
    with pytest.raises(ConfigError, match="10 classes"):
        PlotSource.open(run_dir, test=three).test_data()
