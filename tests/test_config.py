import numpy as np
import pytest

from digitnet.config import TrainConfig, build_model, load_preset, presets, seed_generators
from digitnet.errors import ConfigError


def test_every_preset_loads_and_builds():
    for name in presets():
        config = load_preset(name)
        assert config.preset == name
        assert config.description, f"{name} needs a description for --help"
        rngs = seed_generators(0)
        model = build_model(config, rngs["init"], rngs["dropout"])
        assert model.output_shapes()[-1] == (10,)
        assert model.input_shape == ((784,) if config.layers is None else (1, 28, 28))


def test_seed_presets_match_the_projects_they_reproduce():
    s0 = load_preset("seed-000")
    assert (s0.arch, s0.lr, s0.batch_size, s0.epochs, s0.limit_train) == ("784-128-10", 0.15, 0, 1000, 15000)
    s1 = load_preset("seed-001")
    assert (s1.arch, s1.lr, s1.batch_size, s1.epochs) == ("784-64-10", 0.5, 0, 100)
    s2 = load_preset("seed-002")
    assert (s2.arch, s2.lr, s2.batch_size, s2.epochs, s2.optimizer) == ("784-128-64-10", 0.1, 128, 10, "sgd")
    s3 = load_preset("seed-003")
    assert (s3.arch, s3.epochs) == ("784-128-64-10", 100)
    s4 = load_preset("seed-004")
    assert (s4.arch, s4.activation, s4.loss, s4.init, s4.lr, s4.batch_size, s4.epochs) == (
        "784-128-10", "sigmoid", "mse", "xavier", 0.01, 128, 15)
    # that project's gradients are summed over the batch (dW = a.T @ dz, no 1/B): issue 20
    assert (s4.loss_reduction, s0.loss_reduction, s1.loss_reduction, s2.loss_reduction) == ("sum", "mean", "mean",
                                                                                             "mean")


def test_unknown_preset_and_bad_values_raise_config_error():
    with pytest.raises(ConfigError, match="unknown preset"):
        load_preset("nope")
    with pytest.raises(ConfigError, match="lr must be > 0"):
        TrainConfig().replace(lr=-1.0)
    with pytest.raises(ConfigError, match="dropout"):
        TrainConfig().replace(dropout=1.5)
    with pytest.raises(ConfigError, match="unknown configuration keys"):
        TrainConfig.from_dict({"lr": 0.1, "bogus": 1})


def test_config_round_trips_through_a_dict():
    config = load_preset("mlp-best").replace(epochs=3)
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_seed_generators_are_reproducible_and_independent():
    a, b = seed_generators(7), seed_generators(7)
    assert np.array_equal(a["data"].permutation(10), b["data"].permutation(10))
    c = seed_generators(7)
    assert not np.array_equal(c["init"].random(5), c["dropout"].random(5))
