"""Weight initialisation schemes.

For a Dense layer with ``fan_in`` inputs and ``fan_out`` outputs:

- He (Kaiming) normal, for ReLU-family activations: ``W ~ N(0, 2 / fan_in)`` — keeps the variance
  of activations constant through ReLU layers, which zero half of their inputs.
- Xavier/Glorot uniform, for sigmoid/tanh: ``W ~ U(-a, a)``, ``a = sqrt(6 / (fan_in + fan_out))``
  — keeps the variance of activations and of gradients roughly constant in both directions.
- LeCun normal: ``W ~ N(0, 1 / fan_in)``.

Biases start at zero. Every function returns float32 and takes an explicit Generator.
"""

from __future__ import annotations

import numpy as np

from digitnet.errors import ConfigError

INITIALIZERS = ("he", "xavier", "lecun")


def init_weights(
    shape: tuple[int, ...], fan_in: int, fan_out: int, scheme: str, rng: np.random.Generator
) -> np.ndarray:
    """A float32 array of ``shape`` drawn by ``scheme`` ("he", "xavier" or "lecun")."""
    if scheme == "he":
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    if scheme == "xavier":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, size=shape).astype(np.float32)
    if scheme == "lecun":
        return (rng.standard_normal(shape) * np.sqrt(1.0 / fan_in)).astype(np.float32)
    raise ConfigError(f"unknown initialisation {scheme!r} (choose from {', '.join(INITIALIZERS)})")


def default_init(activation: str) -> str:
    """He for the ReLU family, Xavier for sigmoid and tanh."""
    return "xavier" if activation in ("sigmoid", "tanh") else "he"
