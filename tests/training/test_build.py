"""build_trainer (digitnet.training.build) and the kernels choice (digitnet.kernels.resolve)."""

import numpy as np
import pytest

import digitnet.kernels
from digitnet.config import TrainConfig, build_loss, build_model, build_optimizer, build_schedule, seed_generators
from digitnet.errors import ConfigError
from digitnet.kernels import resolve
from digitnet.kernels.threads import blas_threads_for
from digitnet.nn.sequential import Sequential
from digitnet.training import Trainer, build_trainer
from tests.training.support import blobs

CONFIG = TrainConfig(arch="784-16-3", optimizer="adam", lr=3e-3, epochs=2, batch_size=32, dropout=0.1,
                     schedule="cosine", seed=4)


@pytest.fixture
def no_speed_up(monkeypatch):
    """speed_up fails the test if called."""
    def refuse(*args):
        raise AssertionError("speed_up was called")

    monkeypatch.setattr(digitnet.kernels, "speed_up", refuse)


@pytest.fixture
def spy_speed_up(monkeypatch):
    """speed_up returns a new Sequential over the same layers (as the real one may); records its calls."""
    calls = []

    def speed_up(model, loss_fn, optimizer, threads=None):
        faster = Sequential(model.layers, input_shape=model.input_shape, rng=model.rng)
        calls.append((model, faster))
        return faster, loss_fn, optimizer

    monkeypatch.setattr(digitnet.kernels, "speed_up", speed_up)
    return calls


def test_build_trainer_trains_as_the_config_says(no_speed_up):
    data = blobs(200)
    trainer = build_trainer(CONFIG, data, kernels="reference", log=lambda m: None)
    assert (trainer.epochs, trainer.batch_size) == (2, 32)
    assert trainer.epoch_context is not None             # the BLAS thread rule applies to both kernels
    trainer.run()
    # the same run wired by hand from the config's builders, with the same thread rule
    rngs = seed_generators(CONFIG.seed)
    model = build_model(CONFIG, rngs["init"], rngs["dropout"])
    Trainer(model, build_loss(CONFIG), build_optimizer(CONFIG), data, epochs=2, batch_size=32, rng=rngs["data"],
            schedule=build_schedule(CONFIG), log=lambda m: None,
            epoch_context=lambda: blas_threads_for(model, 32)).run()
    ours, theirs = trainer.model.state_dict(), model.state_dict()
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours)


def test_fast_kernels_train_the_objects_speed_up_returns(spy_speed_up):
    trainer = build_trainer(CONFIG, blobs(64), kernels="fast", log=lambda m: None)
    (built, faster), = spy_speed_up
    assert trainer.model is faster and trainer.model is not built
    assert trainer.epoch_context is not None   # the BLAS thread rule
    trainer.run()
    assert trainer.optimizer.steps == 2 * 2


def test_reference_kernels_do_not_call_speed_up(no_speed_up):
    build_trainer(CONFIG, blobs(64), kernels="reference", log=lambda m: None).run()


def test_the_environment_variable_chooses_when_no_argument_does(monkeypatch, no_speed_up):
    monkeypatch.setenv("DIGITNET_KERNELS", "reference")
    assert resolve() == "reference" and resolve("fast") == "fast"
    build_trainer(CONFIG, blobs(64), log=lambda m: None).run()          # no_speed_up: it would fail if called
    monkeypatch.delenv("DIGITNET_KERNELS")
    assert resolve() == "fast"


@pytest.mark.parametrize(("kernels", "env", "message"), [
    ("bogus", None, "unknown kernels 'bogus': choose fast or reference"),
    ("quick", None, "unknown kernels 'quick'"),
    (None, "gpu", r"unknown kernels 'gpu' \(from \$DIGITNET_KERNELS\): choose fast or reference"),
])
def test_an_unknown_choice_is_a_config_error(kernels, env, message, monkeypatch):
    if env:
        monkeypatch.setenv("DIGITNET_KERNELS", env)
    with pytest.raises(ConfigError, match=message):
        resolve(kernels)
    with pytest.raises(ConfigError, match=message):
        build_trainer(CONFIG, blobs(10), kernels=kernels)
