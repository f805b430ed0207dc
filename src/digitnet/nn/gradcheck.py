"""Check a layer's or loss's analytic gradients against central finite differences.

For a scalar function ``f`` of an array ``a``, the central difference

    df/da[i] ~= (f(a + h e_i) - f(a - h e_i)) / (2h)

has error O(h^2). Computed in float64 with ``h = 1e-6`` it agrees with a correct analytic
gradient to about 1e-9 relative error, so any error above ~1e-6 means a bug in ``backward``.

To check a layer with output ``y``, we use the scalar ``f = sum(y * r)`` for a fixed random
``r``: then ``df/dy = r``, so ``backward(r)`` must return ``df/dx``, and fill ``grads`` with
``df/dparams``. The relative error of two gradients is

    ||analytic - numeric|| / max(||analytic|| + ||numeric||, 1e-12).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from digitnet.nn.base import Layer
from digitnet.nn.losses import Loss


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """``||a - n|| / max(||a|| + ||n||, 1e-12)``."""
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    return float(np.linalg.norm(a - n) / max(np.linalg.norm(a) + np.linalg.norm(n), 1e-12))


def numeric_gradient(f: Callable[[], float], array: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of ``f()`` w.r.t. every element of ``array`` (perturbed in place)."""
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

    Returns ``{"input": err, "weights": err, ...}``. The layer is cast to float64 first.
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
    """Relative error of ``loss.backward()`` vs finite differences of ``loss.forward``."""
    outputs = np.array(outputs, dtype=np.float64)
    loss.forward(outputs, labels)
    analytic = np.array(loss.backward())
    numeric = numeric_gradient(lambda: loss.forward(outputs, labels), outputs, h)
    return relative_error(analytic, numeric)
