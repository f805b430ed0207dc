"""Sequential: a model is a list of layers applied one after another.

Forward runs the layers in order; backward runs them in reverse, each turning dL/d(its output)
into dL/d(its input) and filling its own ``grads``. The model itself holds no math.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from digitnet.errors import ConfigError
from digitnet.nn.activations import ACTIVATIONS, Sigmoid, Softmax, activation_layer, softmax
from digitnet.nn.base import Layer, layer_from_config
from digitnet.nn.init import default_init
from digitnet.nn.layers import Dense, Dropout


def parse_spec(spec: str) -> list[int]:
    """``"784-128-64-10"`` -> ``[784, 128, 64, 10]`` (also accepts commas or 'x')."""
    text = str(spec).strip().replace(",", "-").replace("x", "-")
    try:
        sizes = [int(part) for part in text.split("-") if part.strip()]
    except ValueError:
        raise ConfigError(f"bad architecture {spec!r}: expected sizes like 784-128-64-10") from None
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise ConfigError(f"bad architecture {spec!r}: need at least an input and an output size, all >= 1")
    return sizes


class Sequential:
    """A stack of layers.

    Args:
        layers: the layers, first to last.
        input_shape: shape of one sample without the batch axis, e.g. ``(784,)`` or ``(1, 28, 28)``.
        rng: generator shared by the layers that draw random numbers (dropout masks).

    The last layer's output is either logits (train with ``SoftmaxCrossEntropy``) or
    probabilities from a Softmax/Sigmoid layer (e.g. a sigmoid network trained with MSE).
    """

    def __init__(
        self,
        layers: list[Layer],
        input_shape: tuple[int, ...] = (784,),
        rng: np.random.Generator | None = None,
    ) -> None:
        if not layers:
            raise ConfigError("a model needs at least one layer")
        self.layers = list(layers)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        for layer in self.layers:
            if isinstance(layer, Dropout):
                layer.rng = self.rng
        # Nobody needs dL/dx of the images: every layer up to and including the first one with
        # parameters skips computing its input gradient (backward stops at the first None).
        for layer in self.layers:
            layer.compute_input_grad = False
            if layer.params:
                break
        self.output_shapes()  # validates that the layer sizes fit together

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_spec(
        cls,
        spec: str | list[int],
        activation: str = "relu",
        *,
        dropout: float = 0.0,
        init: str | None = None,
        output_activation: str | None = None,
        rng: np.random.Generator | None = None,
    ) -> Sequential:
        """An MLP from a size list such as ``"784-128-64-10"``.

        Builds ``Dense -> activation [-> Dropout]`` for each hidden size and a final ``Dense``
        whose output is logits, or passes through ``output_activation`` ("sigmoid", "softmax").
        """
        sizes = parse_spec(spec) if isinstance(spec, str) else [int(s) for s in spec]
        if activation.lower().replace("-", "_") not in ACTIVATIONS or activation == "softmax":
            raise ConfigError(f"unknown hidden activation {activation!r} "
                              f"(choose from relu, leaky_relu, sigmoid, tanh)")
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
        return cls(layers, input_shape=(sizes[0],), rng=rng)

    @classmethod
    def from_config(cls, config: dict[str, Any], rng: np.random.Generator | None = None) -> Sequential:
        """Rebuild from :meth:`config` (weights are freshly initialised; load them separately)."""
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ConfigError("a model config must be a dict with a 'layers' list")
        rng = rng if rng is not None else np.random.default_rng(0)
        layers = [layer_from_config(c, rng) for c in config["layers"]]
        input_shape = config.get("input_shape", [784])
        if not isinstance(input_shape, list) or not all(isinstance(d, int) and d > 0 for d in input_shape):
            raise ConfigError(f"bad input_shape {input_shape!r}")
        return cls(layers, input_shape=tuple(input_shape), rng=rng)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable architecture: ``{"input_shape": [...], "layers": [layer configs]}``."""
        return {"input_shape": list(self.input_shape), "layers": [layer.config() for layer in self.layers]}

    # -- computation ----------------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Outputs ``[B, K]`` for inputs ``[B, *input_shape]``."""
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    __call__ = forward

    def forward_all(self, x: np.ndarray) -> list[np.ndarray]:
        """Inference pass returning the input and every layer's output (for explanations and pictures)."""
        outputs = [x]
        for layer in self.layers:
            x = layer.forward(x, training=False)
            outputs.append(x)
        return outputs

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        """Back-propagate dL/d(outputs) through every layer, filling each layer's ``grads``."""
        grad = grad_out
        for layer in reversed(self.layers):
            if grad is None:
                break
            grad = layer.backward(grad)
        return grad

    @property
    def output_kind(self) -> str:
        """"logits", "softmax" or "sigmoid": what the last layer's output is."""
        last = self.layers[-1]
        if isinstance(last, Softmax):
            return "softmax"
        if isinstance(last, Sigmoid):
            return "sigmoid"
        return "logits"

    def predict_proba(self, x: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        """Class probabilities ``[N, K]`` (rows sum to 1), computed in batches."""
        chunks = []
        for start in range(0, len(x), batch_size):
            out = self.forward(x[start:start + batch_size], training=False)
            kind = self.output_kind
            if kind == "logits":
                out = softmax(out)
            elif kind == "sigmoid":
                out = out / np.maximum(out.sum(axis=1, keepdims=True), np.finfo(out.dtype).tiny)
            chunks.append(out.astype(np.float32, copy=False))
        if not chunks:
            return np.zeros((0, self.output_shapes()[-1][0]), dtype=np.float32)
        return np.concatenate(chunks)

    def predict(self, x: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        """Predicted class indices ``[N]`` (int64): the argmax of the outputs."""
        chunks = [np.argmax(self.forward(x[s:s + batch_size], training=False), axis=1)
                  for s in range(0, len(x), batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)

    # -- parameters -----------------------------------------------------------------------------
    def named_parameters(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``[("layers.0.weights", param, grad), ...]`` in a stable order."""
        return [(f"layers.{i}.{key}", layer.params[key], layer.grads[key])
                for i, layer in enumerate(self.layers) for key in layer.params]

    def parameters(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(param, grad), ...]``: what an optimizer updates in place."""
        return [(p, g) for _, p, g in self.named_parameters()]

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer by name (``layers.{i}.{key}``): what a model file stores."""
        state = {name: p for name, p, _ in self.named_parameters()}
        for i, layer in enumerate(self.layers):
            for key, buf in layer.buffers.items():
                state[f"layers.{i}.{key}"] = buf
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays into the existing parameters in place (so optimizer references stay valid).

        Raises ConfigError on a missing or extra name, or a wrong shape.
        """
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        if missing or extra:
            raise ConfigError(f"weights do not fit the architecture: missing {missing or 'none'}, "
                              f"unexpected {extra or 'none'}")
        for name, target in own.items():
            source = np.asarray(state[name])
            if source.shape != target.shape:
                raise ConfigError(f"{name}: expected shape {list(target.shape)}, got {list(source.shape)}")
            np.copyto(target, source, casting="same_kind")

    def num_params(self) -> int:
        return sum(layer.num_params() for layer in self.layers)

    def output_shapes(self) -> list[tuple[int, ...]]:
        """One sample's output shape after each layer."""
        shape = self.input_shape
        shapes = []
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ConfigError as exc:
                raise ConfigError(f"layer {i} ({type(layer).__name__}): {exc}") from None
            shapes.append(tuple(shape))
        self._check_dense_inputs()
        return shapes

    def _check_dense_inputs(self) -> None:
        shape = self.input_shape
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Dense) and shape != (layer.in_features,):
                raise ConfigError(f"layer {i} (Dense) expects {layer.in_features} inputs but gets "
                                  f"shape {list(shape)}")
            shape = layer.output_shape(shape)

    def summary(self) -> str:
        """A Keras-style table: each layer, its output shape and parameter count."""
        rows = [("Layer", "Output shape", "Params")]
        rows.append(("Input", str([None, *self.input_shape]), "0"))
        for i, (layer, shape) in enumerate(zip(self.layers, self.output_shapes(), strict=True)):
            rows.append((f"{i}: {layer!r}", str([None, *shape]), f"{layer.num_params():,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(3)]
        line = "-" * (sum(widths) + 6)

        def fmt(r):
            return f"{r[0]:<{widths[0]}}   {r[1]:<{widths[1]}}   {r[2]:>{widths[2]}}"

        body = [fmt(rows[0]), line, *[fmt(r) for r in rows[1:]], line,
                f"Total parameters: {self.num_params():,}"]
        return "\n".join(body)

    def release_buffers(self) -> None:
        """Free every layer's work buffers (they are re-created on the next training step)."""
        for layer in self.layers:
            layer.release_buffers()

    def __repr__(self) -> str:
        return f"Sequential({', '.join(repr(layer) for layer in self.layers)})"
