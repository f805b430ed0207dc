"""Dense: the fully connected (affine) layer."""

from __future__ import annotations

import numpy as np

from digitnet.errors import ConfigError
from digitnet.nn.base import Layer
from digitnet.nn.init import init_weights
from digitnet.nn.registry import Setting, register


@register(
    "layer", "Dense",
    formula="y = x @ weights + bias",
    gradient="grad_weights = x.T @ grad_y;  grad_bias = sum_b grad_y;  grad_x = grad_y @ weights.T",
    settings=(Setting("in_features", "int", low=1, help="inputs per sample, n_in"),
              Setting("out_features", "int", low=1, help="outputs per sample, n_out"),
              Setting("init", "str", "he", choices_of="initializer", help="how the weights are drawn")),
)
class Dense(Layer):
    """A fully connected layer: every output is a weighted sum of every input, plus a bias.

    Forward::

        y = x @ weights + bias          x [B, in_features], weights [in_features, out_features],
                                        bias [out_features], y [B, out_features]

    Backward, given ``grad_out = dL/dy`` of shape ``[B, out_features]``::

        grad_weights = x.T @ grad_out           [in_features, out_features]
        grad_bias    = grad_out.sum(axis=0)     [out_features]
        grad_in      = grad_out @ weights.T     [B, in_features]

    The batch mean (the 1/B) is already inside ``grad_out``: the loss divides by B.

    Args:
        in_features, out_features: the sizes ``n_in`` and ``n_out``.
        init: how the weights are drawn (a registered initialiser, see :mod:`digitnet.nn.init`:
            "he", "xavier", "lecun"). The bias starts at zero.
        rng: the generator the weights are drawn from.
    """

    needs_rng = True
    cached_attributes = ("x",)

    def __init__(self, in_features: int, out_features: int, init: str = "he",
                 rng: np.random.Generator | None = None) -> None:
        super().__init__()
        self.configure(in_features=in_features, out_features=out_features, init=init)
        rng = rng if rng is not None else np.random.default_rng(0)
        shape = (self.in_features, self.out_features)
        self.params = {"weights": init_weights(shape, self.in_features, self.out_features, self.init, rng),
                       "bias": np.zeros(self.out_features, dtype=np.float32)}
        self.grads = {name: np.zeros_like(value) for name, value in self.params.items()}
        self.x: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ConfigError(f"Dense expects input [B, {self.in_features}], got {list(x.shape)}")
        self.x = x
        return x @ self.params["weights"] + self.params["bias"]

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        self.grads["weights"] = self.x.T @ grad_out
        self.grads["bias"] = grad_out.sum(axis=0)
        return grad_out @ self.params["weights"].T

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if tuple(input_shape) != (self.in_features,):
            raise ConfigError(f"Dense expects {self.in_features} inputs per sample but gets shape "
                              f"{list(input_shape)}")
        return (self.out_features,)

    def describe(self) -> str:
        return f"{self.in_features}->{self.out_features} ({self.init})"
