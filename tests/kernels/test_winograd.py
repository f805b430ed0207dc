"""WinogradPlan F(2x2, 3x3) and F(4x4, 3x3): the 1-D identity behind it, forward and all three gradients
against the reference Conv2D (float64 and float32) over ragged shapes, finite differences, and reused buffers."""

from __future__ import annotations

import numpy as np
import pytest

import digitnet.kernels.winograd as winograd_module
from digitnet.errors import ConfigError
from digitnet.kernels.parallel import Workers
from digitnet.kernels.winograd import WinogradPlan, transform_matrices
from digitnet.nn.conv import Conv2D
from digitnet.nn.gradcheck import numeric_gradient, relative_error

# (batch, C_in, C_out, height, width, padding): every size, channel count, padding and batch of the
# brief appears; 7x7, 5x6 and (for m = 4) 14x14 and 28x28 leave ragged tiles at the end
SHAPES = [
    (5, 32, 64, 14, 14, 1),
    (1, 1, 8, 28, 28, 1),
    (5, 3, 8, 7, 7, 0),
    (1, 3, 1, 5, 6, 1),
    (5, 1, 1, 5, 6, 0),
    (1, 32, 8, 7, 7, 1),
    (5, 3, 64, 28, 28, 0),
    (5, 32, 1, 14, 14, 0),
    (2, 3, 4, 5, 6, 2),              # padding 2 (more than "same")
    (37, 64, 64, 14, 14, 1),         # more images than a part holds (PART_BYTES): the last part ragged
]
SHAPE_IDS = ["x".join(map(str, shape)) for shape in SHAPES]
#: largest error allowed, relative to the largest reference value: float64 is exact up to rounding;
#: float32 loses more with m = 4 (its transforms hold 5s, 8s and sixths)
TOLERANCE = {(np.float64, 2): 1e-12, (np.float64, 4): 1e-10, (np.float32, 2): 2e-6, (np.float32, 4): 2e-5}


def buffers():
    """A ``buffer(name, shape, dtype)`` like FastConv2D.work_buffer: reused arrays, never cleared."""
    store: dict[str, np.ndarray] = {}

    def buffer(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        if name not in store or store[name].shape != shape or store[name].dtype != dtype:
            store[name] = np.full(shape, np.nan, dtype)     # NaN: any value read before written shows up
        return store[name]

    return buffer


def reference(batch, c_in, c_out, height, width, padding, rng):
    """A float64 reference Conv2D with random weights and bias, its input and an output gradient."""
    conv = Conv2D(c_in, c_out, 3, padding=padding, rng=rng)
    conv.params["weights"] = rng.standard_normal((c_out, c_in, 3, 3))
    conv.params["bias"] = rng.standard_normal(c_out)
    x = rng.standard_normal((batch, c_in, height, width))
    grad_out = rng.standard_normal((batch, c_out, *conv.output_hw(height, width)))
    return conv, x, grad_out


def run_plan(plan, x, weights, bias, grad_out, buffer, input_grad=True):
    """Forward then backward through ``plan``; returns ``(y, grad_weights, grad_bias, grad_in)``."""
    y = np.full((len(x), len(weights), plan.out_h, plan.out_w), np.nan, plan.dtype)
    cache = plan.forward(x, weights, bias, y, buffer, "")
    grad_weights, grad_bias = np.full_like(weights, np.nan), np.full_like(bias, np.nan)
    grad_in = np.full_like(x, np.nan) if input_grad else None
    plan.backward(grad_out, cache, weights, grad_weights, grad_bias, grad_in, buffer, "")
    return y, grad_weights, grad_bias, grad_in


def assert_close(actual, expected, tolerance, what, scale=None):
    """Largest error relative to ``scale`` (default: the largest reference value)."""
    assert actual.shape == expected.shape, what
    scale = np.max(np.abs(expected)) if scale is None else scale
    error = np.max(np.abs(actual - expected)) / max(scale, 1e-30)
    assert error < tolerance, f"{what}: error {error:.2e} relative to the largest value"


@pytest.mark.parametrize("tile", [2, 4])
def test_one_dimensional_identity_of_the_transform_matrices(tile, rng):
    """``A^T [(G g) (.) (B^T d)]`` is the correlation of ``d`` (length m + 2) with ``g`` (length 3)."""
    input_t, kernel_t, output_t = transform_matrices(tile)
    assert input_t.shape == (tile + 2, tile + 2) and kernel_t.shape == (tile + 2, 3)
    assert output_t.shape == (tile, tile + 2)
    d, g = rng.standard_normal(tile + 2), rng.standard_normal(3)
    expected = np.array([d[k:k + 3] @ g for k in range(tile)])
    np.testing.assert_allclose(output_t @ ((kernel_t @ g) * (input_t @ d)), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_forward_and_gradients_equal_the_reference_conv2d(shape, tile, dtype, rng):
    conv, x, grad_out = reference(*shape, rng)
    expected_y = conv.forward(x, training=True)
    expected_grad_in = conv.backward(grad_out)
    plan = WinogradPlan(shape[3], shape[4], (shape[5], shape[5]), dtype, tile=tile)
    assert (plan.out_h, plan.out_w) == expected_y.shape[2:]
    cast = [a.astype(dtype) for a in (x, conv.params["weights"], conv.params["bias"], grad_out)]
    y, grad_weights, grad_bias, grad_in = run_plan(plan, *cast, buffers())
    tolerance = TOLERANCE[(dtype, tile)]
    # dL/dbias is a plain sum whose terms may cancel: its rounding scales with the sum of |g|
    bias_scale = np.max(np.abs(grad_out).sum(axis=(0, 2, 3)))
    for actual, expected, what, scale in [
            (y, expected_y, "y", None), (grad_weights, conv.grads["weights"], "dL/dweights", None),
            (grad_bias, conv.grads["bias"], "dL/dbias", bias_scale), (grad_in, expected_grad_in, "dL/dx", None)]:
        assert actual.dtype == dtype, what
        assert_close(actual, expected, tolerance, what, scale)


@pytest.mark.parametrize("tile", [2, 4])
def test_gradients_match_finite_differences(tile, rng):
    plan = WinogradPlan(5, 6, (1, 1), np.float64, tile=tile)
    x = rng.standard_normal((2, 2, 5, 6))
    weights, bias = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    r = rng.standard_normal((2, 3, plan.out_h, plan.out_w))
    buffer = buffers()

    def f() -> float:
        y = np.empty((2, 3, plan.out_h, plan.out_w))
        plan.forward(x, weights, bias, y, buffer, "")
        return float(np.sum(y * r))

    _, grad_weights, grad_bias, grad_in = run_plan(plan, x, weights, bias, r, buffer)
    for analytic, array, what in [(grad_in, x, "input"), (grad_weights, weights, "weights"), (grad_bias, bias, "bias")]:
        error = relative_error(analytic, numeric_gradient(f, array))
        assert error < 1e-8, f"{what}: relative error {error:.2e}"


@pytest.mark.parametrize("tile", [2, 4])
def test_reused_buffers_give_the_same_numbers_for_the_next_batch(tile, rng):
    """The zero frames live in reused buffers: a second batch (and a smaller one) must not see the first."""
    buffer = buffers()
    plan = WinogradPlan(7, 7, (1, 1), np.float64, tile=tile)
    for batch in (4, 4, 2):
        conv, x, grad_out = reference(batch, 3, 5, 7, 7, 1, rng)
        expected_y = conv.forward(x, training=True)
        expected_grad_in = conv.backward(grad_out)
        y, grad_weights, grad_bias, grad_in = run_plan(plan, x, conv.params["weights"], conv.params["bias"],
                                                       grad_out, buffer)
        np.testing.assert_allclose(y, expected_y, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(grad_in, expected_grad_in, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(grad_weights, conv.grads["weights"], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(grad_bias, conv.grads["bias"], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("images_per_part", [1, 2, 3])
def test_a_batch_in_parts_gives_the_same_numbers(images_per_part, tile, rng, monkeypatch):
    """The plan goes through the batch a part at a time (PART_BYTES); dL/dweights sums over the parts."""
    plan = WinogradPlan(6, 5, (1, 1), np.float64, tile=tile)
    per_image = plan.positions * 4 * plan.tiles_h * plan.tiles_w * 8            # 4 channels, float64
    monkeypatch.setattr(winograd_module, "PART_BYTES", images_per_part * per_image)
    assert len(plan.batch_parts(7, 4)) == -(-7 // images_per_part)
    conv, x, grad_out = reference(7, 3, 4, 6, 5, 1, rng)
    expected_y = conv.forward(x, training=True)
    expected_grad_in = conv.backward(grad_out)
    y, grad_weights, grad_bias, grad_in = run_plan(plan, x, conv.params["weights"], conv.params["bias"], grad_out,
                                                   buffers())
    np.testing.assert_allclose(y, expected_y, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_in, expected_grad_in, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_weights, conv.grads["weights"], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_bias, conv.grads["bias"], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("tile", [2, 4])
def test_parts_in_worker_threads_give_bit_identical_numbers(tile, rng, monkeypatch):
    """With Workers the parts run two at a time, each lane in its own scratch arrays; dU is summed in part order."""
    plan = WinogradPlan(7, 6, (1, 1), np.float64, tile=tile)
    per_image = plan.positions * 5 * plan.tiles_h * plan.tiles_w * 8
    monkeypatch.setattr(winograd_module, "PART_BYTES", 2 * per_image)             # 5 parts of 2 images (or 1)
    conv, x, grad_out = reference(9, 4, 5, 7, 6, 1, rng)
    weights, bias = conv.params["weights"], conv.params["bias"]
    serial = run_plan(plan, x, weights, bias, grad_out, buffers())
    workers = Workers(2)
    try:
        buffer = buffers()
        y = np.empty_like(serial[0])
        for _ in range(2):                       # twice: the lanes' reused buffers must not leak between batches
            cache = plan.forward(x, weights, bias, y, buffer, "", workers=workers)
            grads = [np.empty_like(weights), np.empty_like(bias), np.empty_like(x)]
            plan.backward(grad_out, cache, weights, *grads, buffer, "", workers=workers)
            for actual, expected in zip([y, *grads], serial, strict=True):
                np.testing.assert_array_equal(actual, expected)
    finally:
        workers.close()
    np.testing.assert_allclose(serial[0], conv.forward(x, training=True), rtol=1e-10, atol=1e-10)


def test_no_input_gradient_when_grad_in_is_none(rng):
    conv, x, grad_out = reference(3, 1, 4, 6, 6, 1, rng)
    conv.forward(x, training=True)
    conv.backward(grad_out)
    plan = WinogradPlan(6, 6, (1, 1), np.float64)
    _, grad_weights, grad_bias, grad_in = run_plan(plan, x, conv.params["weights"], conv.params["bias"], grad_out,
                                                   buffers(), input_grad=False)
    assert grad_in is None
    np.testing.assert_allclose(grad_weights, conv.grads["weights"], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_bias, conv.grads["bias"], rtol=1e-10, atol=1e-10)


def test_geometry_and_errors():
    plan = WinogradPlan(14, 13, (1, 0), np.float32, tile=4)
    assert (plan.out_h, plan.out_w) == (14, 11)
    assert (plan.tiles_h, plan.tiles_w) == (4, 3)
    assert plan.positions == 36
    assert plan.input_transform.dtype == np.float32
    with pytest.raises(ConfigError, match="tile"):
        WinogradPlan(14, 14, (1, 1), np.float32, tile=3)
    with pytest.raises(ConfigError, match="does not fit"):
        WinogradPlan(2, 5, (0, 0), np.float32)
