"""Multi-layer perceptrons from a size list such as ``"784-128-64-10"``: the one architecture parser."""

from __future__ import annotations

import numpy as np

from digitnet.errors import ConfigError
from digitnet.nn.activations import activation_layer
from digitnet.nn.base import Layer
from digitnet.nn.dense import Dense
from digitnet.nn.dropout import Dropout
from digitnet.nn.init import default_init
from digitnet.nn.registry import entry, names


def parse_spec(spec: str) -> list[int]:
    """``"784-128-64-10"`` -> ``[784, 128, 64, 10]``: layer sizes, input first, output last.

    Sizes may also be separated by commas or 'x' (``"784,128,10"``); spaces around them are
    ignored. Every size must be a positive integer, and there must be at least two.

    Raises:
        ConfigError: anything else (``"784-"``, ``"784--10"``, ``"784-abc-10"``, ``"784-0-10"``, ``"10"``).
    """
    text = str(spec).strip().lower().replace(",", "-").replace("x", "-")
    parts = [part.strip() for part in text.split("-")]
    if not all(part.isdigit() and part.isascii() for part in parts):
        raise ConfigError(f"bad architecture {spec!r}: expected positive sizes like 784-128-64-10")
    return _check_sizes([int(part) for part in parts], spec)


def _check_sizes(sizes: list[int], spec: object) -> list[int]:
    if len(sizes) < 2 or any(size < 1 for size in sizes):
        raise ConfigError(f"bad architecture {spec!r}: need at least an input and an output size, all >= 1")
    return sizes


def mlp_layers(spec: str | list[int], activation: str = "relu", *, dropout: float = 0.0, init: str | None = None,
               output_activation: str | None = None,
               rng: np.random.Generator | None = None) -> tuple[list[Layer], tuple[int]]:
    """The layers of an MLP and its input shape: ``Dense -> activation [-> Dropout]`` per hidden size,
    then a last ``Dense`` whose output is logits, or passes through ``output_activation``.

    Args:
        spec: layer sizes, input first; see :func:`parse_spec`.
        activation: a registered hidden activation: "relu", "sigmoid", "tanh", "gelu", ...
        dropout: dropout rate after every hidden activation (0 = none).
        init: weight initialisation ("he", "xavier", "lecun"); default: the one the
            activation registered (He for the ReLU family, Xavier for sigmoid/tanh).
        output_activation: None (logits), "sigmoid" or "softmax".
        rng: generator for the weights and dropout masks.

    Raises:
        ConfigError: a bad spec, activation, rate or initialisation.
    """
    if isinstance(spec, str):
        sizes = parse_spec(spec)
    else:
        try:
            sizes = _check_sizes([int(size) for size in spec], spec)
        except (TypeError, ValueError):
            raise ConfigError(f"bad architecture {spec!r}: expected a list of sizes") from None
    activation = entry("activation", activation).name
    if activation not in names("activation", tag="hidden"):
        raise ConfigError(f"unknown hidden activation {activation!r} "
                          f"(choose from {', '.join(names('activation', tag='hidden'))})")
    if output_activation is not None:
        output_activation = entry("activation", output_activation).name
        if output_activation not in names("activation", tag="output"):
            raise ConfigError(f"output activation must be {' or '.join(names('activation', tag='output'))} "
                              f"(or none for logits), got {output_activation!r}")
    try:
        dropout = float(dropout)
    except (TypeError, ValueError):
        raise ConfigError(f"dropout rate must be a number, got {dropout!r}") from None
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout rate must be in [0, 1), got {dropout}")
    rng = rng if rng is not None else np.random.default_rng(0)
    init = init or default_init(activation)
    layers: list[Layer] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        last = i == len(sizes) - 2
        layers.append(Dense(n_in, n_out, init=init, rng=rng))
        if not last:
            layers.append(activation_layer(activation))
            if dropout:
                layers.append(Dropout(dropout, rng=rng))
    if output_activation:
        layers.append(activation_layer(output_activation))
    return layers, (sizes[0],)
