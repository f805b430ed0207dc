"""Sequential: a model is a list of layers applied one after another.

Forward runs the layers in order; backward runs them in reverse, each turning dL/d(its output)
into dL/d(its input) and filling its own ``grads``. The model itself holds no math.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from digitnet.errors import ConfigError
from digitnet.nn.activations import Sigmoid, Softmax, activation_layer, activation_name, softmax
from digitnet.nn.base import Layer, layer_from_config
from digitnet.nn.conv import Conv2D
from digitnet.nn.init import default_init
from digitnet.nn.layers import Dense, Dropout

HIDDEN_ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh")
OUTPUT_ACTIVATIONS = ("sigmoid", "softmax")


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


def _snake_case(class_name: str) -> str:
    """``"LeakyReLU"`` -> ``"leaky_relu"``, ``"MaxPool2D"`` -> ``"max_pool2d"``: a word starts at a
    capital that follows a lower-case letter and precedes one."""
    out = []
    for i, char in enumerate(class_name):
        starts_word = (0 < i < len(class_name) - 1 and char.isupper() and class_name[i - 1].islower()
                       and class_name[i + 1].islower())
        out.append("_" + char if starts_word else char)
    return "".join(out).lower()


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
        self._pooled_in_chunks: set[int] = set()      # see forward

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
        """An MLP from a size list such as ``"784-128-64-10"`` (or ``[784, 128, 64, 10]``).

        Builds ``Dense -> activation [-> Dropout]`` for each hidden size and a final ``Dense``
        whose output is logits, or passes through ``output_activation`` ("sigmoid", "softmax").

        Args:
            spec: layer sizes, input first; see :func:`parse_spec`.
            activation: hidden activation: "relu", "leaky_relu", "sigmoid" or "tanh".
            dropout: dropout rate after every hidden activation (0 = none).
            init: weight initialisation ("he", "xavier", "lecun"); default He for the ReLU
                family and Xavier for sigmoid/tanh.
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
        activation = activation_name(activation)
        if activation not in HIDDEN_ACTIVATIONS:
            raise ConfigError(f"unknown hidden activation {activation!r} "
                              f"(choose from {', '.join(HIDDEN_ACTIVATIONS)})")
        if output_activation is not None:
            output_activation = activation_name(output_activation)
            if output_activation not in OUTPUT_ACTIVATIONS:
                raise ConfigError(f"output activation must be {' or '.join(OUTPUT_ACTIVATIONS)} "
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
        return cls(layers, input_shape=(sizes[0],), rng=rng)

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
        """Outputs ``[B, K]`` for inputs ``[B, *input_shape]``.

        ``training=True`` turns dropout on and lets layers reuse their output buffers (the
        result is valid until the next training forward); ``training=False`` returns fresh arrays.
        In training, a Conv2D followed by a 2x2 MaxPool2D may run as one step
        (:meth:`Conv2D.forward_pooled <digitnet.nn.conv.Conv2D.forward_pooled>`, chosen by
        ``Conv2D.pools_in_chunks``): the same numbers, but the convolution's own output is then
        never stored whole, so read activations from an inference forward (``forward_all``).
        """
        # a first convolution and the 2x2 max pooling after it train together, chunk by chunk
        # (Conv2D.forward_pooled: the same numbers without a round trip of the convolution's output
        # through memory); backward must then take the same route
        self._pooled_in_chunks = set()
        layers = self.layers
        index = 0
        while index < len(layers):
            layer = layers[index]
            after = layers[index + 1] if index + 1 < len(layers) else None
            if training and isinstance(layer, Conv2D) and after is not None and layer.pools_in_chunks(after, x):
                x = layer.forward_pooled(x, after)
                self._pooled_in_chunks.add(index)
                index += 2
            else:
                x = layer.forward(x, training)
                index += 1
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
        """Back-propagate ``grad_out = dL/d(outputs)`` ``[B, K]`` through every layer, last to first.

        Fills each layer's ``grads`` (overwriting them). Returns None: the first layers skip the
        gradient with respect to the input images (see ``compute_input_grad``). ``grad_out`` may be
        overwritten.
        """
        grad = grad_out
        index = len(self.layers) - 1
        while index >= 0 and grad is not None:
            if index - 1 in self._pooled_in_chunks:          # see forward: no dL/dx below this pair
                self.layers[index - 1].backward_pooled(grad, self.layers[index])
                return None
            grad = self.layers[index].backward(grad)
            index -= 1
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
                out = softmax(out, out=out)
            elif kind == "sigmoid":
                totals = out.sum(axis=1, keepdims=True)
                out = np.divide(out, totals, out=np.full_like(out, 1.0 / out.shape[1]), where=totals > 0)
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
                raise ConfigError(f"layer {i} ({type(layer).__name__}): {exc}") from None
            shapes.append(tuple(shape))
        return shapes

    def layer_names(self) -> list[str]:
        """Keras-style names, numbered per type: ``["dense_0", "relu_0", "dense_1", ...]``."""
        counts: dict[str, int] = {}
        names = []
        for layer in self.layers:
            base = _snake_case(type(layer).__name__)
            names.append(f"{base}_{counts.get(base, 0)}")
            counts[base] = counts.get(base, 0) + 1
        return names

    def summary(self) -> str:
        """A Keras-style table of the layers, their output shapes and parameter counts.

        For ``Sequential.from_spec("784-128-10")``::

            Layer    Type                 Output shape   Params
            ===================================================
            input                         [None, 784]         0
            dense_0  Dense 784->128 (he)  [None, 128]   100,480
            relu_0   ReLU                 [None, 128]         0
            dense_1  Dense 128->10 (he)   [None, 10]      1,290
            ===================================================
            Total params: 101,770
            Trainable params: 101,770
            Non-trainable params: 0
            Output: logits [None, 10]

        A Dense layer has ``in * out`` weights and ``out`` biases; non-trainable parameters are
        buffers such as BatchNorm's running statistics.
        """
        header = ("Layer", "Type", "Output shape", "Params")
        rows = [("input", "", str([None, *self.input_shape]), "0")]
        shapes = self.output_shapes()
        for name, layer, shape in zip(self.layer_names(), self.layers, shapes, strict=True):
            kind = f"{type(layer).__name__} {layer.describe()}".strip()
            params = layer.num_params() + layer.num_buffer_values()
            rows.append((name, kind, str([None, *shape]), f"{params:,}"))
        widths = [max(len(r[c]) for r in (header, *rows)) for c in range(4)]

        def fmt(r: tuple[str, ...]) -> str:
            return (f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  "
                    f"{r[3]:>{widths[3]}}").rstrip()

        rule = "=" * (sum(widths) + 6)
        trainable = self.num_params()
        buffers = sum(layer.num_buffer_values() for layer in self.layers)
        lines = [fmt(header), rule, *[fmt(r) for r in rows], rule,
                 f"Total params: {trainable + buffers:,}",
                 f"Trainable params: {trainable:,}",
                 f"Non-trainable params: {buffers:,}",
                 f"Output: {self.output_kind} {[None, *shapes[-1]]}"]
        return "\n".join(lines)

    def release_buffers(self) -> None:
        """Free every layer's work buffers (they are re-created on the next training step)."""
        for layer in self.layers:
            layer.release_buffers()

    def __repr__(self) -> str:
        return f"Sequential({', '.join(repr(layer) for layer in self.layers)})"
