"""Conformance: every registered thing works everywhere, by looping over the registry.

A new entry (say an activation in its own file) is covered by these tests without editing them:
it must gradient-check, round-trip through its config and a model file, state its formula, and be
accepted by the training configuration. The CLI and the web page are checked in their own tests.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from digitnet.config import TrainConfig, build_loss, build_model, build_optimizer, build_schedule
from digitnet.errors import ConfigError
from digitnet.nn import Sequential, layer_from_config, make_optimizer
from digitnet.nn.gradcheck import check_layer, check_loss
from digitnet.nn.registry import KINDS, Setting, catalogue, entries, entry, names

LAYERS = entries("layer") + entries("activation")


def example(found) -> tuple[object, tuple[int, ...]]:
    """A small instance of a layer entry (required sizes 3, pairs 2) and an input shape it accepts."""
    kwargs = {}
    for setting in found.settings:
        if setting.default is None and not setting.optional:
            kwargs[setting.name] = 2 if setting.kind == "pair" else 3
    extra = {"rng": np.random.default_rng(0)} if getattr(found.target, "needs_rng", False) else {}
    layer = found.target(**kwargs, **extra)
    for shape in ((3,), (3, 6, 6)):
        try:
            layer.output_shape(shape)
            return layer, shape
        except ConfigError:
            continue
    raise AssertionError(f"{found.name}: no small input shape fits")


def test_the_registry_lists_every_kind_and_the_new_entries():
    assert set(catalogue()) == set(KINDS)
    assert "gelu" in names("activation", tag="hidden")
    assert "rmsprop" in names("optimizer")
    for kind in KINDS:
        assert names(kind), kind


@pytest.mark.parametrize("found", [e for kind in KINDS for e in entries(kind)], ids=lambda e: f"{e.kind}-{e.name}")
def test_every_entry_states_its_formula_and_settings(found):
    assert found.formula.strip()
    assert found.summary.strip()
    if found.kind in ("layer", "activation", "loss"):
        assert found.gradient.strip(), f"{found.name} has no gradient formula"
    for setting in found.settings:
        assert isinstance(setting, Setting) and setting.range_text()
    json.dumps(found.to_dict())          # the web page's options are this JSON


@pytest.mark.parametrize("found", LAYERS, ids=lambda e: e.name)
def test_every_layer_gradient_checks(found, rng):
    layer, shape = example(found)
    x = rng.uniform(0.2, 1.5, (4, *shape)) * rng.choice([-1.0, 1.0], (4, *shape))   # away from kinks at 0
    if hasattr(layer, "fixed_mask"):
        layer.fixed_mask = (rng.random(x.shape) >= 0.5) * 2.0
    errors = check_layer(layer, x, rng)
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("found", LAYERS, ids=lambda e: e.name)
def test_every_layer_round_trips_through_its_config_and_a_model_file(found, tmp_path, rng):
    from digitnet.io import load_model, save_model

    layer, shape = example(found)
    config = json.loads(json.dumps(layer.config()))
    assert config["type"] == found.target.__name__
    assert layer_from_config(config, np.random.default_rng(0)).config() == layer.config()
    model = Sequential([layer], input_shape=shape)
    outputs = int(np.prod(model.output_shapes()[-1]))
    if len(model.output_shapes()[-1]) > 1 or outputs < 2:
        return                                             # a model file needs [B, K] outputs
    classes = [str(k) for k in range(outputs)]
    path = save_model(tmp_path / "model.safetensors", model, classes=classes)
    x = rng.standard_normal((3, *shape)).astype(np.float32)
    for kernels in ("reference", "fast"):
        loaded = load_model(path, kernels=kernels).model
        np.testing.assert_allclose(loaded.forward(x), model.forward(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", names("activation", tag="hidden"))
def test_every_hidden_activation_builds_and_trains_a_network_from_a_config(name, rng):
    config = TrainConfig(arch="6-5-3", activation=name)
    config.validate()
    model = build_model(config, np.random.default_rng(0), np.random.default_rng(1))
    assert name.replace("_", "") in model.summary().lower().replace("_", "")
    loss, optimizer = build_loss(config), build_optimizer(config)
    x, labels = rng.random((16, 6), dtype=np.float32), rng.integers(0, 3, 16)
    first = loss.forward(model.forward(x, training=True), labels)
    for _ in range(30):
        loss.forward(model.forward(x, training=True), labels)
        model.backward(loss.backward())
        optimizer.step(model.parameters())
    assert loss.forward(model.forward(x), labels) < first


@pytest.mark.parametrize("name", names("optimizer"))
def test_every_optimizer_descends_a_quadratic_and_round_trips_its_config(name):
    optimizer = make_optimizer(name, lr=0.05)
    config = optimizer.config()
    assert entry("optimizer", config.pop("name")).target is type(optimizer)
    weights = np.array([[3.0, -2.0]], dtype=np.float32)
    for _ in range(50):
        optimizer.step([(weights, weights.copy())])        # the gradient of |w|^2 / 2 is w
    assert np.abs(weights).max() < 2.0
    TrainConfig(optimizer=name).validate()


@pytest.mark.parametrize("name", names("loss"))
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_every_loss_gradient_checks_in_both_reductions(name, reduction, rng):
    loss = build_loss(TrainConfig(loss=name, loss_reduction=reduction))
    outputs = rng.uniform(0.05, 0.95, (5, 4))
    assert check_loss(loss, outputs, rng.integers(0, 4, 5)) < 1e-6
    assert loss.config()["reduction"] == reduction


@pytest.mark.parametrize("name", names("schedule"))
def test_every_schedule_gives_positive_rates_from_a_config(name):
    schedule = build_schedule(TrainConfig(schedule=name, epochs=4, lr=0.1, warmup_epochs=1))
    rates = [schedule(progress) for progress in np.linspace(0, 3.9, 20)]
    assert all(0 <= rate <= 0.1 + 1e-12 for rate in rates) and rates[5] > 0


@pytest.mark.parametrize("name", names("initializer"))
def test_every_initializer_draws_float32_with_a_spread(name):
    weights = entry("initializer", name).target((200, 100), 200, 100, np.random.default_rng(0))
    assert weights.dtype == np.float32 and weights.shape == (200, 100)
    assert 0 < weights.std() < 1
    TrainConfig(init=name).validate()


def test_unknown_names_are_one_clear_error_listing_the_choices():
    with pytest.raises(ConfigError, match="choose from .*gelu"):
        entry("activation", "swish")
    with pytest.raises(ConfigError, match="optimizer must be one of .*rmsprop"):
        TrainConfig(optimizer="lion").validate()
    with pytest.raises(ConfigError, match=r"dropout must be \[0, 1\)"):
        TrainConfig(dropout=1.5).validate()
    with pytest.raises(ConfigError, match="Dense has no setting units"):
        entry("layer", "Dense").check({"units": 3})


def test_names_are_forgiving_about_case_and_dashes():
    assert entry("activation", "Leaky-ReLU").name == "leaky_relu"
    assert entry("activation", "leakyrelu").name == "leaky_relu"
    config = TrainConfig(activation="GELU")
    config.validate()
    assert config.activation == "gelu"
