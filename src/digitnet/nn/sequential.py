"""Sequential: a model is a list of layers applied one after another.

Forward runs the layers in order; backward runs them in reverse, each turning dL/d(its output)
into dL/d(its input) and filling its own ``grads``. The model itself holds no math.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from digitnet.errors import ConfigError
from digitnet.nn.activations import Sigmoid, Softmax, softmax
from digitnet.nn.base import Layer, layer_from_config
from digitnet.nn.mlp import mlp_layers, parse_spec
from digitnet.nn.summary import layer_names, summary

__all__ = ["Sequential", "parse_spec"]


class Sequential:
    """A stack of layers.

    Args:
        layers: the layers, first to last.
        input_shape: shape of one sample without the batch axis, e.g. ``(784,)`` or ``(1, 28, 28)``.
        rng: generator shared by the layers that draw random numbers (dropout masks).

    The last layer's output is either logits (train with ``SoftmaxCrossEntropy``) or
    probabilities from a Softmax/Sigmoid layer (e.g. a sigmoid network trained with MSE).
    """

    def __init__(self, layers: list[Layer], input_shape: tuple[int, ...] = (784,),
                 rng: np.random.Generator | None = None) -> None:
        if not layers:
            raise ConfigError("a model needs at least one layer")
        self.layers = list(layers)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        for layer in self.layers:       # layers that draw random numbers while training share the model's
            if hasattr(layer, "rng") and not layer.params:
                layer.rng = self.rng
        self.output_shapes()  # validates that the layer sizes fit together

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: str | list[int], activation: str = "relu", *, dropout: float = 0.0,
                  init: str | None = None, output_activation: str | None = None,
                  rng: np.random.Generator | None = None) -> Sequential:
        """An MLP from a size list such as ``"784-128-64-10"``: ``Dense -> activation [-> Dropout]``
        per hidden size, then a ``Dense`` whose output is logits (or ``output_activation``).
        See :func:`digitnet.nn.mlp.mlp_layers` for every argument; ConfigError for a bad one."""
        rng = rng if rng is not None else np.random.default_rng(0)
        layers, input_shape = mlp_layers(spec, activation, dropout=dropout, init=init,
                                         output_activation=output_activation, rng=rng)
        return cls(layers, input_shape=input_shape, rng=rng)

    @classmethod
    def from_config(cls, config: dict[str, Any], rng: np.random.Generator | None = None) -> Sequential:
        """Rebuild from :meth:`config` (weights are freshly initialised; load them separately).

        ``config`` is ``{"input_shape": [784], "layers": [{"type": "Dense", ...}, ...]}``: plain
        JSON, so an architecture can be written by hand, e.g.
        ``[{"type": "Dense", "in_features": 784, "out_features": 32}, {"type": "ReLU"}, ...]``.

        Raises:
            ConfigError: not of that form, an unknown layer type, or layers whose sizes do not fit.
        """
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ConfigError("a model config must be a dict with a 'layers' list")
        rng = rng if rng is not None else np.random.default_rng(0)
        layers = [layer_from_config(c, rng) for c in config["layers"]]
        input_shape = config.get("input_shape", [784])
        if not isinstance(input_shape, list | tuple) or not input_shape or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape):
            raise ConfigError(f"bad input_shape {input_shape!r}: expected positive sizes like [784]")
        return cls(layers, input_shape=tuple(input_shape), rng=rng)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable architecture: ``{"input_shape": [...], "layers": [layer configs]}``."""
        return {"input_shape": list(self.input_shape), "layers": [layer.config() for layer in self.layers]}

    # -- computation ----------------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Outputs ``[B, K]`` for inputs ``[B, *input_shape]``: each layer's output is the next one's input.

        ``training=True`` turns dropout on and makes every layer keep what its backward needs.
        """
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

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Back-propagate ``grad_out = dL/d(outputs)`` ``[B, K]`` through every layer, last to first.

        Each layer turns ``dL/d(its output)`` into ``dL/d(its input)`` and sets its own ``grads``
        (read them afterwards, through :meth:`parameters`). Returns ``dL/d(inputs)``.
        """
        grad = grad_out
        for layer in reversed(self.layers):
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

    @property
    def inference_batch_size(self) -> int:
        """Batch size for inference: large for MLPs, smaller for CNNs, whose feature maps are big
        (a 2048-image batch of 32x28x28 maps alone is 205 MB; 256 keeps it in cache-friendly sizes)."""
        return 2048 if len(self.input_shape) == 1 else 256

    def predict_proba(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities ``[N, K]`` float32 (rows sum to 1), computed in batches of ``batch_size``.

        - logits: ``softmax(outputs)``;
        - softmax output: the outputs as they are;
        - sigmoid output (independent per-class scores): each row divided by its sum; a row whose
          scores all rounded to 0 becomes uniform.
        """
        kind = self.output_kind
        batch_size = batch_size or self.inference_batch_size
        chunks = []
        for start in range(0, len(x), batch_size):
            out = self.forward(x[start:start + batch_size], training=False)
            if kind == "logits":
                out = softmax(out)
            elif kind == "sigmoid":
                totals = out.sum(axis=1, keepdims=True)
                uniform = np.full_like(out, 1.0 / out.shape[1])
                out = np.where(totals > 0, out / np.where(totals > 0, totals, 1), uniform)
            chunks.append(out.astype(np.float32, copy=False))
        if not chunks:
            return np.zeros((0, self.output_shapes()[-1][0]), dtype=np.float32)
        return np.concatenate(chunks)

    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Predicted class indices ``[N]`` (int64): the argmax of the outputs."""
        batch_size = batch_size or self.inference_batch_size
        chunks = [np.argmax(self.forward(x[s:s + batch_size], training=False), axis=1)
                  for s in range(0, len(x), batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)

    # -- parameters -----------------------------------------------------------------------------
    def named_parameters(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``[("layers.0.weights", param, grad), ...]`` in a stable order, with the latest gradients."""
        return [(f"layers.{i}.{key}", layer.params[key], layer.grads[key])
                for i, layer in enumerate(self.layers) for key in layer.params]

    def parameters(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(param, grad), ...]``: what an optimizer updates in place (ask again after each backward)."""
        return [(layer.params[key], layer.grads[key]) for layer in self.layers for key in layer.params]

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
        """Number of trainable scalars in all layers (weights and biases)."""
        return sum(layer.num_params() for layer in self.layers)

    def output_shapes(self) -> list[tuple[int, ...]]:
        """One sample's output shape after each layer (no batch axis).

        Raises:
            ConfigError: a layer does not accept the shape the previous one produces.
        """
        shape = self.input_shape
        shapes = []
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ConfigError as exc:
                raise ConfigError(f"layer {i} ({layer.layer_type}): {exc}") from None
            shapes.append(tuple(shape))
        return shapes

    def layer_names(self) -> list[str]:
        """Keras-style names, numbered per type: ``["dense_0", "relu_0", "dense_1", ...]``."""
        return layer_names(self.layers)

    def summary(self) -> str:
        """A Keras-style table of the layers, their output shapes and parameter counts (see
        :func:`digitnet.nn.summary.summary`)."""
        return summary(self)

    def release_buffers(self) -> None:
        """Let every layer forget what its last training forward kept for backward."""
        for layer in self.layers:
            layer.release_buffers()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(repr(layer) for layer in self.layers)})"
