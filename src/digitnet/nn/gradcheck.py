"""Check a layer's or loss's analytic gradients against central finite differences.

For a scalar function ``f`` of an array ``a``, the central difference

    df/da[i] ~= (f(a + h e_i) - f(a - h e_i)) / (2h)

has error O(h^2). Computed in float64 with ``h = 1e-6`` it agrees with a correct analytic
gradient to about 1e-9 relative error, so any error above ~1e-6 means a bug in ``backward``.

To check a layer with output ``y``, we use the scalar ``f = sum(y * r)`` for a fixed random
``r``: then ``df/dy = r``, so ``backward(r)`` must return ``df/dx``, and fill ``grads`` with
``df/dparams``. The relative error of two gradients is

    ||analytic - numeric|| / max(||analytic|| + ||numeric||, 1e-12).

Checks run in ``training=True`` mode, so a Dropout layer must be given a ``fixed_mask`` (a
random mask would change between the perturbed evaluations). Inputs of ReLU-like layers should
stay away from the kink at 0 by more than ``h``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from digitnet.nn.base import Layer
from digitnet.nn.losses import Loss

if TYPE_CHECKING:
    from digitnet.nn.sequential import Sequential


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """``||a - n|| / max(||a|| + ||n||, 1e-12)``."""
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    return float(np.linalg.norm(a - n) / max(np.linalg.norm(a) + np.linalg.norm(n), 1e-12))


def numeric_gradient(f: Callable[[], float], array: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of ``f()`` w.r.t. every element of ``array`` (perturbed in place).

    ``f`` must read ``array`` (it is perturbed in place and restored), so ``array`` must be
    contiguous: a reshaped copy would silently not be seen by ``f``. Returns float64 of its shape.
    """
    if not array.flags.c_contiguous:
        raise ValueError("numeric_gradient needs a C-contiguous array (it perturbs it in place)")
    grad = np.zeros_like(array, dtype=np.float64)
    flat = array.reshape(-1)
    grad_flat = grad.reshape(-1)
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + h
        plus = f()
        flat[i] = original - h
        minus = f()
        flat[i] = original
        grad_flat[i] = (plus - minus) / (2 * h)
    return grad


def to_float64(layer: Layer) -> Layer:
    """Cast a layer's parameters, gradients and buffers to float64 in place (for checking)."""
    for store in (layer.params, layer.grads, layer.buffers):
        for key, value in store.items():
            store[key] = value.astype(np.float64)
    layer.release_buffers()
    return layer


def check_layer(layer: Layer, x: np.ndarray, rng: np.random.Generator, training: bool = True,
                h: float = 1e-6) -> dict[str, float]:
    """Relative errors of ``backward`` vs finite differences for the input and every parameter.

    Uses ``f = sum(layer.forward(x) * r)`` with a fixed random ``r`` of the output's shape.
    Returns ``{"input": err, "weights": err, ...}``. The layer is cast to float64 first (in
    place: check a throw-away layer).
    """
    to_float64(layer)
    x = np.array(x, dtype=np.float64)
    layer.compute_input_grad = True
    y = layer.forward(x, training=training)
    r = rng.standard_normal(y.shape)

    def f() -> float:
        return float(np.sum(layer.forward(x, training=training) * r))

    layer.forward(x, training=training)
    grad_in = layer.backward(r.copy())
    analytic = {"input": np.array(grad_in)}
    analytic.update({k: g.copy() for k, g in layer.grads.items()})

    errors = {"input": relative_error(analytic["input"], numeric_gradient(f, x, h))}
    for key, param in layer.params.items():
        errors[key] = relative_error(analytic[key], numeric_gradient(f, param, h))
    return errors


def check_loss(loss: Loss, outputs: np.ndarray, labels: np.ndarray, h: float = 1e-6) -> float:
    """Relative error of ``loss.backward()`` vs finite differences of ``loss.forward``.

    ``outputs [B, K]`` are cast to float64; ``labels [B]`` are class indices.
    """
    outputs = np.array(outputs, dtype=np.float64)
    loss.forward(outputs, labels)
    analytic = np.array(loss.backward())
    numeric = numeric_gradient(lambda: loss.forward(outputs, labels), outputs, h)
    return relative_error(analytic, numeric)


def check_model(model: Sequential, loss: Loss, x: np.ndarray, labels: np.ndarray,
                h: float = 1e-6) -> dict[str, float]:
    """Relative error of every parameter's gradient through a whole model and loss.

    Back-propagates ``loss(model.forward(x, training=True), labels)`` once, then compares each
    ``grads`` array with central differences of the loss. This checks the chaining of the layers
    (and their in-place buffer reuse) as well as each layer. Returns ``{"layers.0.weights": err,
    ...}`` (the names of :meth:`Sequential.named_parameters`). The model is cast to float64 in
    place; give Dropout layers a ``fixed_mask``. Cost: two forwards per parameter scalar, so use
    a small model.
    """
    for layer in model.layers:
        to_float64(layer)
    x = np.array(x, dtype=np.float64)

    def f() -> float:
        return loss.forward(model.forward(x, training=True), labels)

    f()
    model.backward(loss.backward())
    analytic = {name: grad.copy() for name, _, grad in model.named_parameters()}
    return {name: relative_error(analytic[name], numeric_gradient(f, param, h))
            for name, param, _ in model.named_parameters()}
