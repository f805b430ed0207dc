"""Optimizers (the reference) against hand-computed steps, weight decay rules, clipping, checkpoint state.

The expected numbers are worked out from each optimizer's formulas by hand (shown in the
comments), for two parameters p0 = (1, -2), learning rate 0.1 and the gradient sequence
g1 = (0.5, -1), g2 = (0.1, 0.2), g3 = (-0.3, 0.4). ``HAND_STEPS`` collects them, so that
tests/kernels/test_optim.py holds the tuned optimizers to the same numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from digitnet.errors import ConfigError
from digitnet.nn import SGD, Adam, AdamW, clip_grad_norm, make_optimizer
from digitnet.nn.rmsprop import RMSprop

GRADS = [(0.5, -1.0), (0.1, 0.2), (-0.3, 0.4)]
LR = 0.1


def run(optimizer, steps=3, shape=(2,), dtype=np.float64):
    """Apply the first ``steps`` gradients of GRADS to p0 = (1, -2); returns the parameter after each."""
    param = np.array([1.0, -2.0], dtype=dtype).reshape(shape)
    grad = np.zeros_like(param)
    history = []
    for g in GRADS[:steps]:
        grad[...] = np.reshape(g, shape)
        optimizer.step([(param, grad)])
        history.append(param.ravel().tolist())
    return history


# name -> (optimizer factory, steps, parameter shape, the parameter after each step), from the tests below
HAND_STEPS = {
    "sgd": (lambda: SGD(LR), 3, (2,), [[0.95, -1.9], [0.94, -1.92], [0.97, -1.96]]),
    "momentum": (lambda: SGD(LR, momentum=0.9), 3, (2,), [[0.95, -1.9], [0.895, -1.83], [0.8755, -1.807]]),
    "nesterov": (lambda: SGD(LR, momentum=0.9, nesterov=True), 3, (2,),
                 [[0.905, -1.81], [0.8455, -1.767], [0.85795, -1.7863]]),
    "sgd_decay": (lambda: SGD(LR, weight_decay=0.1), 2, (1, 2), [[0.94, -1.88], [0.9206, -1.8812]]),
    "nesterov_decay": (lambda: SGD(LR, momentum=0.9, nesterov=True, weight_decay=0.1), 1, (1, 2),
                       [[0.886, -1.772]]),
    "adam": (lambda: Adam(LR), 3, (2,), [[0.900000002, -1.900000001], [0.8196959063846518, -1.8488973939904947],
                                         [0.7986246117635081, -1.8354734342081562]]),
    "adam_decay": (lambda: Adam(LR, weight_decay=0.1), 2, (1, 2),
                   [[0.9000000016666666, -1.9000000008333333], [0.8136483454297575, -1.8336169077420748]]),
    "adamw": (lambda: AdamW(LR, weight_decay=0.1), 3, (1, 2),
              [[0.890000002, -1.880000001], [0.8007959063646517, -1.8100973939804947],
               [0.7717166526798616, -1.7785724602583513]]),
}


def assert_steps(history, expected, dtype=np.float64):
    tolerance = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(history, expected, rtol=0, atol=tolerance)


# -- SGD ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_plain_sgd_steps(dtype):
    # p -= 0.1 g:  (1 - 0.05, -2 + 0.1) = (0.95, -1.9);  (0.95 - 0.01, -1.9 - 0.02) = (0.94, -1.92);
    #              (0.94 + 0.03, -1.92 - 0.04) = (0.97, -1.96)
    assert_steps(run(SGD(LR), dtype=dtype), [[0.95, -1.9], [0.94, -1.92], [0.97, -1.96]], dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sgd_momentum_steps(dtype):
    # v1 = g1 = (0.5, -1)                          p1 = p0 - 0.1 v1 = (0.95, -1.9)
    # v2 = 0.9 v1 + g2 = (0.55, -0.7)              p2 = (0.95 - 0.055, -1.9 + 0.07) = (0.895, -1.83)
    # v3 = 0.9 v2 + g3 = (0.195, -0.23)            p3 = (0.895 - 0.0195, -1.83 + 0.023) = (0.8755, -1.807)
    history = run(SGD(LR, momentum=0.9), dtype=dtype)
    assert_steps(history, [[0.95, -1.9], [0.895, -1.83], [0.8755, -1.807]], dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sgd_nesterov_steps(dtype):
    # same velocities; step = g + 0.9 v
    # step1 = (0.5 + 0.45, -1 - 0.9) = (0.95, -1.9)            p1 = (0.905, -1.81)
    # step2 = (0.1 + 0.495, 0.2 - 0.63) = (0.595, -0.43)       p2 = (0.8455, -1.767)
    # step3 = (-0.3 + 0.1755, 0.4 - 0.207) = (-0.1245, 0.193)  p3 = (0.85795, -1.7863)
    history = run(SGD(LR, momentum=0.9, nesterov=True), dtype=dtype)
    assert_steps(history, [[0.905, -1.81], [0.8455, -1.767], [0.85795, -1.7863]], dtype)


def test_sgd_weight_decay_is_an_l2_gradient_term_on_matrices():
    # g = grad + 0.1 p:  g1 = (0.5 + 0.1, -1 - 0.2) = (0.6, -1.2)        p1 = (0.94, -1.88)
    #                    g2 = (0.1 + 0.094, 0.2 - 0.188) = (0.194, 0.012) p2 = (0.9206, -1.8812)
    history = run(SGD(LR, weight_decay=0.1), steps=2, shape=(1, 2))
    assert_steps(history, [[0.94, -1.88], [0.9206, -1.8812]])
    # Nesterov with decay, step 1: v = g = (0.6, -1.2); step = 1.9 g = (1.14, -2.28); p1 = (0.886, -1.772)
    history = run(SGD(LR, momentum=0.9, nesterov=True, weight_decay=0.1), steps=1, shape=(1, 2))
    assert_steps(history, [[0.886, -1.772]])


# -- Adam and AdamW -----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adam_steps_with_bias_correction(dtype):
    # t=1: m = 0.1 g1 = (0.05, -0.1); v = 0.001 g1^2 = (0.00025, 0.001)
    #      m_hat = m / 0.1 = (0.5, -1); v_hat = v / 0.001 = (0.25, 1)
    #      step = 0.1 m_hat / (sqrt(v_hat) + 1e-8) = (0.1 * 0.5/0.50000001, -0.1 * 1/1.00000001)
    #      p1 = (0.900000002, -1.900000001)   (without the bias correction the step would be 0.316)
    # t=2: m = 0.9 m + 0.1 g2 = (0.055, -0.07); v = 0.999 v + 0.001 g2^2 = (0.00025975, 0.001039)
    #      m_hat = m / (1 - 0.9^2) = m / 0.19 = (0.28947368..., -0.36842105...)
    #      v_hat = v / (1 - 0.999^2) = v / 0.001999 = (0.12993997..., 0.51975988...)
    #      step = 0.1 m_hat / (sqrt(v_hat) + 1e-8) = (0.08030409562, -0.05110260701)
    #      p2 = (0.8196959063846, -1.8488973939905)
    # t=3: likewise, p3 = (0.7986246117635, -1.8354734342082)
    history = run(Adam(LR), dtype=dtype)
    expected = [[0.900000002, -1.900000001], [0.8196959063846518, -1.8488973939904947],
                [0.7986246117635081, -1.8354734342081562]]
    assert_steps(history, expected, dtype)


def test_adam_first_step_has_size_lr_whatever_the_gradient_scale():
    # m_hat = g and v_hat = g^2 at t = 1, so the step is lr * g / |g|: bias correction at work
    for scale in (1e-4, 1.0, 1e3):
        param = np.zeros(3)
        Adam(lr=0.01, eps=1e-12).step([(param, scale * np.array([1.0, -2.0, 0.5]))])
        np.testing.assert_allclose(param, [-0.01, 0.01, -0.01], rtol=1e-6)


def test_adam_with_coupled_l2_decay_steps():
    # g = grad + 0.1 p.  t=1: g = (0.6, -1.2); the first step is still lr * sign(g): p1 = (0.9, -1.9)
    # t=2: g = (0.1 + 0.09, 0.2 - 0.19) = (0.19, 0.01); m = (0.073, -0.107); v = (0.00039574, 0.00143866)
    #      p2 = p1 - 0.1 (m / 0.19) / (sqrt(v / 0.001999) + 1e-8) = (0.81364834543, -1.83361690774)
    history = run(Adam(LR, weight_decay=0.1), steps=2, shape=(1, 2))
    assert_steps(history, [[0.9000000016666666, -1.9000000008333333],
                           [0.8136483454297575, -1.8336169077420748]])


def test_adamw_decays_the_weights_outside_the_adaptive_step():
    # t=1: p = p0 * (1 - 0.1 * 0.1) = (0.99, -1.98), then the Adam step (0.1, -0.1): (0.89, -1.88)
    # t=2: p = p1 * 0.99 = (0.8811, -1.8612), then the Adam step of t=2 above:
    #      (0.8811 - 0.08030409562, -1.8612 + 0.05110260701) = (0.80079590438, -1.81009739299)
    history = run(AdamW(LR, weight_decay=0.1), steps=3, shape=(1, 2))
    assert_steps(history, [[0.890000002, -1.880000001], [0.8007959063646517, -1.8100973939804947],
                           [0.7717166526798616, -1.7785724602583513]])


# -- weight decay applies to matrices only --------------------------------------------------------
@pytest.mark.parametrize("optimizer", [SGD(LR, weight_decay=0.5), SGD(LR, momentum=0.9, weight_decay=0.5),
                                       Adam(LR, weight_decay=0.5), AdamW(LR, weight_decay=0.5),
                                       RMSprop(LR, weight_decay=0.5)],
                         ids=["sgd", "momentum", "adam", "adamw", "rmsprop"])
def test_weight_decay_shrinks_matrices_but_not_biases(optimizer):
    weights = np.ones((2, 2))
    bias = np.ones(2)
    for _ in range(3):
        optimizer.step([(weights, np.zeros((2, 2))), (bias, np.zeros(2))])
    np.testing.assert_array_equal(bias, 1)            # zero gradient and no decay: untouched
    assert np.all(weights < 0.99)


def test_step_updates_in_place_and_never_touches_the_gradients(rng):
    for optimizer in (SGD(LR, momentum=0.9, nesterov=True, weight_decay=0.1), Adam(LR, weight_decay=0.1),
                      AdamW(LR), RMSprop(LR, weight_decay=0.1)):
        param = rng.standard_normal((3, 4)).astype(np.float32)
        grad = rng.standard_normal((3, 4)).astype(np.float32)
        param_id, grad_before = id(param), grad.copy()
        pairs = [(param, grad)]
        optimizer.step(pairs)
        assert id(pairs[0][0]) == param_id and param.dtype == np.float32
        np.testing.assert_array_equal(grad, grad_before)
        assert all(a.dtype == np.float32 for slots in optimizer.state for a in slots.values())


def test_step_with_a_different_number_of_parameters_raises():
    optimizer = SGD(LR)
    optimizer.step([(np.ones(2), np.ones(2))])
    with pytest.raises(ConfigError, match="state for 1 parameters"):
        optimizer.step([(np.ones(2), np.ones(2)), (np.ones(2), np.ones(2))])


@pytest.mark.parametrize("make", [lambda: SGD(LR, momentum=0.9, nesterov=True, weight_decay=0.1),
                                  lambda: Adam(LR, weight_decay=0.1), lambda: AdamW(LR),
                                  lambda: RMSprop(LR, weight_decay=0.1)],
                         ids=["nesterov", "adam", "adamw", "rmsprop"])
def test_state_round_trip_resumes_exactly(make, rng):
    grads = [rng.standard_normal((3, 2)) for _ in range(4)]
    straight, param = make(), np.ones((3, 2))
    for g in grads:
        straight.step([(param, g)])
    first, resumed_param = make(), np.ones((3, 2))
    for g in grads[:2]:
        first.step([(resumed_param, g)])
    arrays = {k: v.copy() for k, v in first.state_arrays().items()}
    assert arrays and not any("scratch" in k for k in arrays)        # scratch space is not state
    second = make()
    second.load_state_arrays(arrays, first.steps, num_params=1)
    for g in grads[2:]:
        second.step([(resumed_param, g)])
    np.testing.assert_array_equal(resumed_param, param)


# -- gradient clipping --------------------------------------------------------------------------
def test_clip_grad_norm_scales_all_gradients_by_one_global_factor():
    grads = [np.array([[3.0]], dtype=np.float32), np.array([4.0, 0.0], dtype=np.float32)]
    assert clip_grad_norm(grads, max_norm=1.0) == pytest.approx(5.0)     # sqrt(9 + 16)
    np.testing.assert_allclose(grads[0], [[0.6]], rtol=1e-6)
    np.testing.assert_allclose(grads[1], [0.8, 0.0], rtol=1e-6)
    assert math.sqrt(sum(float((g ** 2).sum()) for g in grads)) == pytest.approx(1.0, rel=1e-6)


def test_clip_grad_norm_leaves_small_gradients_alone_and_zero_disables():
    grads = [np.array([0.3, 0.4])]
    assert clip_grad_norm(grads, max_norm=1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(grads[0], [0.3, 0.4])
    big = [np.array([30.0, 40.0])]
    assert clip_grad_norm(big, max_norm=0) == pytest.approx(50.0)
    np.testing.assert_array_equal(big[0], [30.0, 40.0])


def test_clip_grad_norm_reports_a_nan_norm():
    grads = [np.array([np.nan, 1.0])]
    assert math.isnan(clip_grad_norm(grads, max_norm=1.0))


# -- make_optimizer and validation --------------------------------------------------------------
def test_make_optimizer_by_name():
    assert make_optimizer("sgd", 0.1).momentum == 0.0
    momentum = make_optimizer("momentum", 0.1)
    assert isinstance(momentum, SGD) and momentum.momentum == 0.9 and not momentum.nesterov
    nesterov = make_optimizer("nesterov", 0.1, momentum=0.8)
    assert nesterov.nesterov and nesterov.momentum == 0.8
    assert make_optimizer("sgd", 0.1, momentum=0.5, nesterov=True).nesterov
    adam = make_optimizer("Adam", 1e-3, beta1=0.8, momentum=0.9)        # momentum does not apply: ignored
    assert type(adam) is Adam and adam.beta1 == 0.8 and adam.weight_decay == 0.0
    assert make_optimizer("adamw", 1e-3).weight_decay == 0.01           # AdamW's default
    assert make_optimizer("adamw", 1e-3, weight_decay=0.0).weight_decay == 0.0
    assert make_optimizer("sgd", 0.1, weight_decay=1e-4).config() == {
        "name": "sgd", "lr": 0.1, "weight_decay": 1e-4, "momentum": 0.0, "nesterov": False}


@pytest.mark.parametrize(("args", "kwargs"), [
    (("lion", 0.1), {}), (("sgd", 0.0), {}), (("sgd", -1), {}), (("sgd", float("nan")), {}),
    (("sgd", "fast"), {}), (("sgd", 0.1), {"momentum": 1.0}), (("sgd", 0.1), {"nesterov": True}),
    (("sgd", 0.1), {"weight_decay": -1}), (("adam", 0.1), {"beta1": 1.0}), (("adam", 0.1), {"eps": 0}),
    (("rmsprop", 0.1), {"alpha": 1.0}), (("rmsprop", 0.1), {"eps": -1e-8}),
])
def test_make_optimizer_rejects_bad_requests(args, kwargs):
    with pytest.raises(ConfigError):
        make_optimizer(*args, **kwargs)


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    (("lion", 0.1), {}, r"unknown optimizer 'lion' \(choose from sgd, momentum, nesterov, adam, adamw, rmsprop\)"),
    (("sgd", 0.0), {}, r"sgd lr must be > 0, got 0.0"),
    (("sgd", "fast"), {}, r"sgd lr must be a number, got 'fast'"),
    (("momentum", 0.1), {"momentum": 1.0}, r"momentum must be \[0, 1\), got 1.0"),
    (("sgd", 0.1), {"nesterov": True}, "Nesterov momentum needs momentum > 0"),
    (("adam", 0.1), {"beta2": 1.0}, r"adam beta2 must be \[0, 1\), got 1.0"),
    (("adamw", 0.1), {"weight_decay": -1}, r"adamw weight_decay must be >= 0, got -1"),
])
def test_make_optimizer_errors_quote_the_registered_ranges(args, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_optimizer(*args, **kwargs)


@pytest.mark.parametrize(("args", "kwargs"), [(("adam", 0.1), {"betas": (0.9, 0.99)}),
                                              (("sgd", 0.1), {"beta1": 0.8})])
def test_make_optimizer_rejects_a_setting_the_optimizer_does_not_have(args, kwargs):
    with pytest.raises(ConfigError, match="has no setting"):
        make_optimizer(*args, **kwargs)


def test_optimizers_take_their_registered_defaults():
    assert (SGD().lr, SGD().momentum, SGD().nesterov, SGD().weight_decay) == (0.1, 0.0, False, 0.0)
    assert (Adam().lr, Adam().beta1, Adam().beta2, Adam().eps) == (1e-3, 0.9, 0.999, 1e-8)
    assert AdamW().weight_decay == 0.01
    assert make_optimizer("rmsprop", 0.01).config() == {"name": "rmsprop", "lr": 0.01, "alpha": 0.99, "eps": 1e-8,
                                                        "weight_decay": 0.0}
    assert isinstance(make_optimizer("RMSprop", 0.01), RMSprop)
    assert make_optimizer("rmsprop", 0.01, momentum=0.9).config()["name"] == "rmsprop"   # momentum: ignored


def test_the_learning_rate_can_change_between_steps():
    """A schedule sets ``lr`` before each step; the next step uses it."""
    optimizer = SGD(0.1)
    param = np.array([1.0])
    optimizer.step([(param, np.array([1.0]))])
    optimizer.lr = 0.01
    optimizer.step([(param, np.array([1.0]))])
    np.testing.assert_allclose(param, [1.0 - 0.1 - 0.01], rtol=1e-15)
    assert optimizer.steps == 2


@pytest.mark.parametrize("name", list(HAND_STEPS))
def test_every_hand_computed_case_in_float32(name):
    make, steps, shape, expected = HAND_STEPS[name]
    assert_steps(run(make(), steps=steps, shape=shape, dtype=np.float32), expected, np.float32)
