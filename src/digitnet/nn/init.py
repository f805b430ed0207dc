"""Weight initialisation: how the first weights are drawn.

For a layer with ``fan_in`` inputs and ``fan_out`` outputs per unit (a convolution counts
``C * kH * kW`` of each), every scheme returns float32 and takes an explicit Generator:

- He (Kaiming) normal, for the ReLU family: ``W ~ N(0, 2 / fan_in)`` keeps the variance of the
  activations constant through layers that zero half of their inputs.
- Xavier (Glorot) uniform, for sigmoid and tanh: ``W ~ U(-a, a)``, ``a = sqrt(6 / (fan_in + fan_out))``
  keeps the variance of activations and of gradients roughly constant in both directions.
- LeCun normal: ``W ~ N(0, 1 / fan_in)``.

Biases start at zero.
"""

from __future__ import annotations

import numpy as np

from digitnet.nn.registry import entry, register


@register("initializer", "he", formula="weights ~ N(0, 2 / fan_in)")
def he(shape: tuple[int, ...], fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """He normal, for ReLU-like activations."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


@register("initializer", "xavier", formula="weights ~ U(-a, a),  a = sqrt(6 / (fan_in + fan_out))")
def xavier(shape: tuple[int, ...], fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """Xavier/Glorot uniform, for sigmoid and tanh."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


@register("initializer", "lecun", formula="weights ~ N(0, 1 / fan_in)")
def lecun(shape: tuple[int, ...], fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """LeCun normal."""
    return (rng.standard_normal(shape) * np.sqrt(1.0 / fan_in)).astype(np.float32)


def init_weights(shape: tuple[int, ...], fan_in: int, fan_out: int, scheme: str,
                 rng: np.random.Generator) -> np.ndarray:
    """A float32 array of ``shape`` drawn by the registered scheme ``scheme`` ("he", "xavier", ...)."""
    return entry("initializer", scheme).target(shape, fan_in, fan_out, rng)


def default_init(activation: str) -> str:
    """The initialiser an activation registered as its own (He unless it says otherwise)."""
    return entry("activation", activation).extra.get("init", "he")
