"""Learning-rate schedules: values at known points."""

from __future__ import annotations

import math

import pytest

from digitnet.errors import ConfigError
from digitnet.nn import Schedule


def test_constant():
    schedule = Schedule("constant", base_lr=0.1, epochs=10)
    assert [schedule(p) for p in (0, 3.7, 10, 12)] == [0.1, 0.1, 0.1, 0.1]


def test_step_halves_every_step_size_epochs():
    schedule = Schedule("step", base_lr=0.1, epochs=10, step_size=2, gamma=0.5)
    values = [schedule(p) for p in (0, 1.99, 2.0, 3.5, 4.0, 9.0)]
    assert values == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.00625])


def test_exponential_decays_smoothly_by_gamma_per_epoch():
    schedule = Schedule("exponential", base_lr=0.2, epochs=10, gamma=0.9)
    assert schedule(0) == pytest.approx(0.2)
    assert schedule(1) == pytest.approx(0.18)
    assert schedule(2) == pytest.approx(0.162)
    assert schedule(0.5) == pytest.approx(0.2 * math.sqrt(0.9))


def test_cosine_at_start_half_and_end():
    schedule = Schedule("cosine", base_lr=0.1, epochs=10)
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(5) == pytest.approx(0.05)                       # (1 + cos(pi/2)) / 2 = 1/2
    assert schedule(2.5) == pytest.approx(0.1 * (1 + math.cos(math.pi / 4)) / 2)
    assert schedule(10) == pytest.approx(0.0, abs=1e-15)
    assert schedule(11) == pytest.approx(0.0, abs=1e-15)            # stays at the floor afterwards


def test_cosine_with_a_floor():
    schedule = Schedule("cosine", base_lr=0.1, epochs=4, min_lr=0.02)
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(2) == pytest.approx(0.06)
    assert schedule(4) == pytest.approx(0.02)


def test_linear_warmup_then_cosine():
    schedule = Schedule("cosine", base_lr=0.1, epochs=12, warmup_epochs=2)
    assert schedule(0) == pytest.approx(0.1 * 0.001 / 2)            # small but not zero
    assert schedule(0.5) == pytest.approx(0.025)
    assert schedule(1) == pytest.approx(0.05)
    assert schedule(2) == pytest.approx(0.1)                        # peak at the end of warm-up
    assert schedule(7) == pytest.approx(0.05)                       # half-way through the 10 cosine epochs
    assert schedule(12) == pytest.approx(0.0, abs=1e-15)


def test_warmup_then_step_counts_epochs_after_the_warmup():
    schedule = Schedule("step", base_lr=0.1, epochs=10, warmup_epochs=1, step_size=2, gamma=0.1)
    assert schedule(0.5) == pytest.approx(0.05)
    assert schedule(1) == pytest.approx(0.1)
    assert schedule(2.9) == pytest.approx(0.1)
    assert schedule(3) == pytest.approx(0.01)


def test_a_very_short_warmup_never_exceeds_the_base_rate():
    schedule = Schedule("constant", base_lr=0.1, epochs=1, warmup_epochs=1e-4)
    assert schedule(0) == pytest.approx(0.1)


def test_config_round_trip():
    schedule = Schedule("cosine", base_lr=0.05, epochs=20, warmup_epochs=1, min_lr=0.001)
    assert Schedule.from_config(schedule.config()) == schedule


@pytest.mark.parametrize("kwargs", [
    {"name": "linear"}, {"base_lr": 0}, {"epochs": 0}, {"warmup_epochs": -1}, {"step_size": 0},
    {"gamma": 0}, {"gamma": 1.5}, {"warmup_epochs": 2, "epochs": 1}, {"min_lr": 0.5}, {"min_lr": -0.1},
    {"base_lr": "fast"}, {"epochs": None}, {"epochs": float("inf")},
])
def test_bad_schedules_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        Schedule(**kwargs)


@pytest.mark.parametrize("config", [{"name": "cosine", "speed": 2}, "cosine", {"base_lr": "fast"}])
def test_bad_schedule_configs_raise_config_error(config):
    with pytest.raises(ConfigError):
        Schedule.from_config(config)


def test_schedule_names_come_from_the_registry():
    assert Schedule("Cosine", base_lr=0.1, epochs=2).name == "cosine"
    with pytest.raises(ConfigError, match=r"unknown schedule 'linear' \(choose from constant, step, exponential"):
        Schedule("linear")
