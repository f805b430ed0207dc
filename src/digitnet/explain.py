"""One image through the network, step by step: the numbers of the forward pass, the loss, the
backward pass and one SGD step, as a structured record (presentation lives in ``digitnet explain``).

For one image ``x`` (a batch of ``B = 1``, shape ``[1, *input_shape]``) and its label ``y``::

    forward    out[0] = x;  out[i+1] = layers[i].forward(out[i])          every layer, in order
    output     p = softmax(z)            when the last layer gives logits z  [1, K]
    loss       L = -log p[y]             (cross-entropy; MSE: L = (1/2B) sum (a - onehot(y))^2)
    backward   grad_z = (p - onehot(y)) / B                                 dL/d(outputs) [1, K]
               grad_in = layers[i].backward(grad_out), last layer first; each layer also fills
               its grads (grad_weights, grad_bias, ...)
    step       param = param - lr * grad                                    plain SGD, every param

The forward pass is the network *as it predicts* (inference): Dropout is the identity and
BatchNorm uses its running statistics, so the probabilities are exactly ``model.predict_proba(x)``.
The backward pass differentiates that same function. It works for any :class:`Sequential`
(convolutions, pooling, ...): each layer runs its own ``forward`` and ``backward``; only
BatchNorm's inference-mode derivative is written here, because its ``backward`` differentiates the
training-mode (batch statistics) function.

Symbols follow the textbook: ``x`` is the input, the output of the n-th layer with parameters is
``z{n}`` (a pre-activation) and the output of the layer after it ``a{n}`` (an activation); further
parameter-free layers get ``a{n}_2``, ``a{n}_3``, ... The model you pass is never changed: the
backward pass and the step run on a copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from digitnet.data.batches import images_to_inputs
from digitnet.errors import ConfigError, DataError
from digitnet.nn.activations import softmax
from digitnet.nn.losses import Loss, MeanSquaredError, SoftmaxCrossEntropy, make_loss
from digitnet.nn.model import Sequential
from digitnet.nn.optim import SGD

#: layers run in inference mode on the explained copy too (their training mode is another function)
INFERENCE_ONLY = ("Dropout", "BatchNorm")

#: forward formula of each layer type; {x} is the input's symbol, {y} the output's
FORWARD_FORMULAS: dict[str, str] = {
    "Dense": "{y} = {x} @ weights + bias",
    "Conv2D": "{y}[c] = bias[c] + sum_k cross_correlate({x}[k], weights[c, k])",
    "MaxPool2D": "{y} = max of {x} over each {window} window",
    "AvgPool2D": "{y} = mean of {x} over each {window} window",
    "Flatten": "{y} = reshape({x}, [B, -1])",
    "Dropout": "{y} = {x}   (the identity when predicting; training keeps each unit with prob. 1 - {rate:g})",
    "BatchNorm": "{y} = gamma * ({x} - running_mean) / sqrt(running_var + eps) + beta",
    "ReLU": "{y} = max({x}, 0)",
    "LeakyReLU": "{y} = {x} if {x} > 0 else {slope:g} * {x}",
    "Sigmoid": "{y} = 1 / (1 + exp(-{x}))",
    "Tanh": "{y} = tanh({x})",
    "Softmax": "{y} = exp({x} - max {x}) / sum(exp({x} - max {x}))",
}

#: backward formulas of each layer type: the parameter gradients, then the input gradient
BACKWARD_FORMULAS: dict[str, list[str]] = {
    "Dense": ["grad_weights = {x}.T @ grad_{y}", "grad_bias = grad_{y}.sum(axis=0)",
              "grad_{x} = grad_{y} @ weights.T"],
    "Conv2D": ["grad_weights[c, k] = sum over positions of grad_{y}[c] * the {x}[k] patch under the kernel",
               "grad_bias[c] = sum of grad_{y}[c]",
               "grad_{x} = each position's grad_{y} spread back through weights (col2im)"],
    "MaxPool2D": ["grad_{x} = grad_{y} routed to the maximum of each window, 0 elsewhere"],
    "AvgPool2D": ["grad_{x} = grad_{y} shared equally by the inputs of each window"],
    "Flatten": ["grad_{x} = reshape(grad_{y}, shape of {x})"],
    "Dropout": ["grad_{x} = grad_{y}   (the identity when predicting)"],
    "BatchNorm": ["grad_gamma = sum(grad_{y} * x_hat),  x_hat = ({x} - running_mean) / sqrt(running_var + eps)",
                  "grad_beta = sum(grad_{y})",
                  "grad_{x} = grad_{y} * gamma / sqrt(running_var + eps)"],
    "ReLU": ["grad_{x} = grad_{y} * ({x} > 0)"],
    "LeakyReLU": ["grad_{x} = grad_{y} * (1 if {x} > 0 else {slope:g})"],
    "Sigmoid": ["grad_{x} = grad_{y} * {y} * (1 - {y})"],
    "Tanh": ["grad_{x} = grad_{y} * (1 - {y}**2)"],
    "Softmax": ["grad_{x} = {y} * (grad_{y} - sum(grad_{y} * {y}))"],
}

UPDATE_FORMULA = "param = param - lr * grad"


# ----------------------------------------------------------------------------------------------
# The record
# ----------------------------------------------------------------------------------------------
@dataclass
class ForwardStep:
    """One layer of the forward pass.

    Attributes:
        index: position in ``model.layers``; name: ``"dense_0"``; kind: the layer type (``"Dense"``).
        description: ``layer.describe()`` (``"784->128 (he)"``).
        input_symbol, symbol: ``"x"`` and ``"z1"`` (see the module docstring).
        formula: the layer's math in the code's names, e.g. ``"z1 = x @ weights + bias"``.
        input_shape, output_shape: with the batch axis, e.g. ``(1, 784)`` and ``(1, 128)``.
        output: the layer's output, float32 ``output_shape`` (a copy).
        params: the layer's parameters by key (``"weights"``, ``"bias"``), copies.
        stats: ``min``, ``mean``, ``max`` of the output, ``size``, and per kind: ``off`` (ReLU:
            outputs that are exactly 0), ``negative`` (LeakyReLU), ``saturated`` (Sigmoid/Tanh:
            local derivative below 0.02).
    """

    index: int
    name: str
    kind: str
    description: str
    input_symbol: str
    symbol: str
    formula: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    output: np.ndarray
    params: dict[str, np.ndarray] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossRecord:
    """The loss of the image for its label and its gradient with respect to the outputs.

    ``grad`` is ``dL/d(outputs)`` ``[1, K]``: ``(p - onehot(label)) / B`` for cross-entropy on
    logits, ``(a - onehot(label)) / B`` for MSE (``B = 1``).
    """

    name: str
    formula: str
    value: float
    grad_formula: str
    grad: np.ndarray
    target: np.ndarray


@dataclass
class BackwardStep:
    """One layer of the backward pass (the steps run from the last layer to the first).

    Attributes:
        formulas: the gradients this layer computes, in the code's names.
        grad_out: ``dL/d(output)`` ``[1, ...]``, what the layer above handed down.
        grad_in: ``dL/d(input)``, what this layer hands to the one below (for the first layer:
            how each input pixel would change the loss).
        grads: ``dL/d(param)`` by key (``"weights"``, ``"bias"``), the shapes of the parameters.
    """

    index: int
    name: str
    kind: str
    input_symbol: str
    symbol: str
    formulas: list[str]
    grad_out: np.ndarray
    grad_in: np.ndarray | None
    grads: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class UpdateRecord:
    """One SGD step ``param = param - lr * grad`` on the image, and what it changed.

    ``update_norms[name]`` is ``||lr * grad||`` and ``param_norms[name]`` is ``||param||`` before
    the step (names as in ``model.named_parameters()``: ``"layers.0.weights"``).
    """

    lr: float
    formula: str
    update_norms: dict[str, float]
    param_norms: dict[str, float]
    loss_before: float
    loss_after: float
    p_true_before: float
    p_true_after: float
    predicted_before: int
    predicted_after: int
    probabilities_after: np.ndarray


@dataclass
class Explanation:
    """Everything :func:`explain_image` computed for one image.

    ``inputs`` is ``[1, *input_shape]`` float32 in [0, 1]; ``probabilities`` ``[K]`` sums to 1 and
    equals ``model.predict_proba(inputs)[0]``; ``backward`` runs from the last layer to the first.
    """

    image: np.ndarray | None
    inputs: np.ndarray
    label: int
    label_given: bool
    classes: list[str]
    output_kind: str
    forward: list[ForwardStep]
    probabilities: np.ndarray
    predicted: int
    loss: LossRecord
    backward: list[BackwardStep]
    update: UpdateRecord

    @property
    def outputs(self) -> np.ndarray:
        """The last layer's output ``[1, K]`` (logits, or probabilities for softmax/sigmoid outputs)."""
        return self.forward[-1].output

    def to_dict(self, values: int = 8) -> dict[str, Any]:
        """A JSON-ready summary: shapes, statistics, norms and the first ``values`` numbers of each array."""

        def head(array: np.ndarray) -> list[float]:
            return [round(float(v), 6) for v in np.asarray(array).ravel()[:values]]

        return {
            "label": self.label, "label_given": self.label_given, "classes": list(self.classes),
            "output_kind": self.output_kind,
            "forward": [{"index": s.index, "name": s.name, "kind": s.kind, "description": s.description,
                         "symbol": s.symbol, "formula": s.formula, "input_shape": list(s.input_shape),
                         "output_shape": list(s.output_shape), "values": head(s.output),
                         "params": {k: list(v.shape) for k, v in s.params.items()}, "stats": s.stats}
                        for s in self.forward],
            "probabilities": [float(p) for p in self.probabilities], "predicted": self.predicted,
            "loss": {"name": self.loss.name, "formula": self.loss.formula, "value": self.loss.value,
                     "grad_formula": self.loss.grad_formula, "grad": [float(g) for g in self.loss.grad.ravel()]},
            "backward": [{"index": s.index, "name": s.name, "kind": s.kind, "formulas": s.formulas,
                          "grad_out_shape": list(s.grad_out.shape), "grad_out_norm": norm(s.grad_out),
                          "grad_in_shape": None if s.grad_in is None else list(s.grad_in.shape),
                          "grad_in_norm": None if s.grad_in is None else norm(s.grad_in),
                          "grads": {k: {"shape": list(g.shape), "norm": norm(g), "values": head(g)}
                                    for k, g in s.grads.items()}}
                         for s in self.backward],
            "update": {"lr": self.update.lr, "formula": self.update.formula,
                       "update_norms": self.update.update_norms, "param_norms": self.update.param_norms,
                       "loss_before": self.update.loss_before, "loss_after": self.update.loss_after,
                       "p_true_before": self.update.p_true_before, "p_true_after": self.update.p_true_after,
                       "predicted_before": self.update.predicted_before,
                       "predicted_after": self.update.predicted_after},
        }


def norm(array: np.ndarray) -> float:
    """The L2 norm ``sqrt(sum(array**2))`` of all elements, as a Python float (computed in float64)."""
    flat = np.asarray(array, dtype=np.float64).ravel()
    return float(np.sqrt(flat @ flat))


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
def layer_kind(layer) -> str:
    """The layer's type name as in its config (``"Dense"``, ``"ReLU"``, ...)."""
    return layer.config().get("type", type(layer).__name__)


def symbols(model: Sequential) -> list[str]:
    """The output symbol of every layer: ``z{n}`` for the n-th layer with parameters, ``a{n}`` for the
    layer after it, ``a{n}_2``, ``a{n}_3`` for further parameter-free layers (before the first
    parameter layer: ``x_1``, ``x_2``, ...)."""
    names = []
    count, extra = 0, 0
    for layer in model.layers:
        if layer.params:
            count += 1
            extra = 0
            names.append(f"z{count}")
            continue
        extra += 1
        base = f"a{count}" if count else "x"
        names.append(base if extra == 1 and count else f"{base}_{extra}")
    return names


def _format(template: str, layer, x: str, y: str) -> str:
    config = layer.config()
    window = config.get("kernel_size")
    if isinstance(window, int):
        window = [window, window]
    values = {**config, "x": x, "y": y,
              "window": "x".join(str(v) for v in window) if isinstance(window, list | tuple) else window}
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError):
        return template.replace("{x}", x).replace("{y}", y)


def forward_formula(layer, x: str, y: str) -> str:
    """The layer's forward math with input symbol ``x`` and output symbol ``y``."""
    kind = layer_kind(layer)
    template = FORWARD_FORMULAS.get(kind, "{y} = " + kind + "({x})")
    return _format(template, layer, x, y)


def backward_formulas(layer, x: str, y: str) -> list[str]:
    """The layer's backward math: parameter gradients first, then ``grad_{x}`` (the input gradient)."""
    kind = layer_kind(layer)
    templates = BACKWARD_FORMULAS.get(kind)
    if templates is None:   # a layer type registered elsewhere: name what it computes
        templates = [f"grad_{key} = dL/d{key}" for key in layer.params] + ["grad_{x} = " + kind + ".backward(grad_{y})"]
    return [_format(t, layer, x, y) for t in templates]


def output_stats(kind: str, output: np.ndarray) -> dict[str, Any]:
    """``min``, ``mean``, ``max``, ``size`` of a layer's output, plus what matters for its kind.

    ReLU: ``off`` = how many outputs are exactly 0 (their local derivative is 0, so no gradient
    flows back through them). LeakyReLU: ``negative``. Sigmoid: ``saturated`` = outputs with
    ``a * (1 - a) < 0.02`` (a < ~0.02 or a > ~0.98); Tanh: ``1 - a**2 < 0.02`` (|a| > ~0.99).
    """
    values = np.asarray(output, dtype=np.float64)
    stats: dict[str, Any] = {"size": int(values.size), "min": float(values.min()), "mean": float(values.mean()),
                             "max": float(values.max())}
    if kind == "ReLU":
        stats["off"] = int(np.count_nonzero(values <= 0))
    elif kind == "LeakyReLU":
        stats["negative"] = int(np.count_nonzero(values <= 0))
    elif kind == "Sigmoid":
        stats["saturated"] = int(np.count_nonzero(values * (1 - values) < 0.02))
    elif kind == "Tanh":
        stats["saturated"] = int(np.count_nonzero(1 - values**2 < 0.02))
    return stats


def probabilities_of(outputs: np.ndarray, output_kind: str) -> np.ndarray:
    """Class probabilities ``[N, K]`` from a model's outputs, exactly as ``Sequential.predict_proba``.

    logits: ``softmax(z)``; softmax outputs as they are; sigmoid outputs divided by their row sum.
    """
    out = np.array(outputs, dtype=np.float32)
    if output_kind == "logits":
        return softmax(out, out=out)
    if output_kind == "sigmoid":
        totals = out.sum(axis=1, keepdims=True)
        return np.divide(out, totals, out=np.full_like(out, 1.0 / out.shape[1]), where=totals > 0)
    return out


def default_loss(model: Sequential, training: dict[str, Any] | None = None) -> Loss:
    """The loss the model was trained with (``training["loss"]``), else cross-entropy for logits and
    MSE for softmax/sigmoid outputs. Label smoothing is left out: the explanation shows the plain loss."""
    name = (training or {}).get("loss")
    if not isinstance(name, str):
        name = "cross_entropy" if model.output_kind == "logits" else "mse"
    return make_loss(name)


def loss_formulas(loss: Loss, symbol: str) -> tuple[str, str]:
    """``(loss formula, gradient formula)`` for the output symbol ``symbol`` (``"z2"``)."""
    if isinstance(loss, SoftmaxCrossEntropy):
        return ("L = -log p[label],  p = softmax(" + symbol + ")",
                f"grad_{symbol} = (p - onehot(label)) / B")
    if isinstance(loss, MeanSquaredError):
        return (f"L = (1 / 2B) * sum(({symbol} - onehot(label))**2)",
                f"grad_{symbol} = ({symbol} - onehot(label)) / B")
    return f"L = {type(loss).__name__}({symbol}, label)", f"grad_{symbol} = dL/d{symbol}"


def copy_model(model: Sequential) -> Sequential:
    """An independent copy: the same architecture, parameters and buffers (running statistics)."""
    copy = Sequential.from_config(model.config(), rng=np.random.default_rng(0))
    copy.load_state_dict({name: np.array(value) for name, value in model.state_dict().items()})
    return copy


def _batchnorm_inference_backward(layer, x: np.ndarray, grad_out: np.ndarray) -> np.ndarray:
    """Gradients of BatchNorm as it predicts: ``y = gamma * x_hat + beta`` with the running statistics,
    ``x_hat = (x - running_mean) / sqrt(running_var + eps)``, which are constants here (unlike in training,
    where the batch's mean and variance depend on x). Fills ``layer.grads``; returns ``grad_in``."""
    batch, features = x.shape[0], x.shape[1]
    x3 = x.reshape(batch, features, -1).astype(np.float64)
    g3 = grad_out.reshape(batch, features, -1).astype(np.float64)
    inv_std = 1.0 / np.sqrt(layer.buffers["running_var"].astype(np.float64) + layer.eps)
    x_hat = (x3 - layer.buffers["running_mean"].astype(np.float64)[:, None]) * inv_std[:, None]
    layer.grads["beta"][...] = g3.sum(axis=(0, 2))
    layer.grads["gamma"][...] = (g3 * x_hat).sum(axis=(0, 2))
    gamma = layer.params["gamma"].astype(np.float64)
    return (g3 * (gamma * inv_std)[:, None]).reshape(grad_out.shape).astype(grad_out.dtype)


def _true_class_loss(model: Sequential, loss: Loss, inputs: np.ndarray, label: int) -> tuple[float, np.ndarray]:
    outputs = model.forward(inputs, training=False)
    value = loss.forward(outputs, np.array([label]))
    return value, probabilities_of(outputs, model.output_kind)[0]


# ----------------------------------------------------------------------------------------------
# The explanation
# ----------------------------------------------------------------------------------------------
def explain_image(
    model: Sequential,
    image: np.ndarray,
    label: int | None = None,
    *,
    lr: float = 0.1,
    loss: Loss | str | None = None,
    classes: list[str] | None = None,
    training: dict[str, Any] | None = None,
) -> Explanation:
    """Forward, loss, backward and one SGD step for one image (see the module docstring).

    Args:
        model: any Sequential; it is not modified.
        image: uint8 ``[28, 28]`` (white on black, as MNIST), or inputs already in the model's
            layout: float ``[*input_shape]`` or ``[1, *input_shape]`` in [0, 1].
        label: the true class ``0..K-1``; None uses the predicted class (``label_given`` False).
        lr: the learning rate of the SGD step, > 0.
        loss: a Loss or its name; default: :func:`default_loss` (what the model was trained with).
        classes: class names (default ``"0"..."K-1"``).
        training: the model's training configuration (a model file's ``training`` metadata),
            used to choose the loss.

    Returns:
        An :class:`Explanation`.

    Raises:
        DataError: an image that does not fit the model's input; ConfigError: a bad label or lr.
    """
    image_array = np.asarray(image)
    shown_image = None
    if image_array.dtype == np.uint8:
        if image_array.ndim == 2:
            image_array = image_array[None]
        shown_image = image_array[0] if image_array.ndim == 3 and len(image_array) == 1 else None
        inputs = images_to_inputs(image_array, model.input_shape)
    else:
        inputs = np.asarray(image_array, dtype=np.float32)
        if inputs.shape == model.input_shape:
            inputs = inputs[None]
    if inputs.shape != (1, *model.input_shape):
        raise DataError(f"explain takes one image: expected input [1, {', '.join(map(str, model.input_shape))}], "
                        f"got {list(inputs.shape)}")
    if not (lr > 0 and np.isfinite(lr)):
        raise ConfigError(f"the learning rate of the explained step must be > 0, got {lr}")
    classes = list(classes) if classes is not None else [str(k) for k in range(model.output_shapes()[-1][0])]
    loss_fn = make_loss(loss) if isinstance(loss, str) else (loss or default_loss(model, training))

    work = copy_model(model)
    for layer in work.layers:   # on the copy, every layer hands back its input gradient (even for the pixels)
        layer.compute_input_grad = True
    names = work.layer_names()
    outs = symbols(work)
    ins = ["x", *outs[:-1]]

    # -- forward: each layer in inference mode's math, keeping what backward needs --------------
    forward: list[ForwardStep] = []
    layer_inputs: list[np.ndarray] = []
    x = inputs
    for i, layer in enumerate(work.layers):
        kind = layer_kind(layer)
        layer_inputs.append(x)
        y = layer.forward(x, training=kind not in INFERENCE_ONLY)
        forward.append(ForwardStep(
            index=i, name=names[i], kind=kind, description=layer.describe(), input_symbol=ins[i], symbol=outs[i],
            formula=forward_formula(layer, ins[i], outs[i]), input_shape=tuple(x.shape), output_shape=tuple(y.shape),
            output=np.array(y), params={k: np.array(v) for k, v in layer.params.items()},
            stats=output_stats(kind, y)))
        x = y
    outputs = forward[-1].output
    probabilities = probabilities_of(outputs, work.output_kind)[0]
    predicted = int(np.argmax(probabilities))
    label_given = label is not None
    label = predicted if label is None else int(label)
    if not 0 <= label < len(probabilities):
        raise ConfigError(f"label {label} is outside the model's classes 0-{len(probabilities) - 1}")

    # -- loss ---------------------------------------------------------------------------------
    loss_value = loss_fn.forward(outputs, np.array([label]))
    grad = np.array(loss_fn.backward())
    loss_formula, grad_formula = loss_formulas(loss_fn, outs[-1])
    target = np.zeros(len(probabilities), dtype=np.float32)
    target[label] = 1
    loss_record = LossRecord(name=loss_fn.name, formula=loss_formula, value=float(loss_value),
                             grad_formula=grad_formula, grad=grad.copy(), target=target)

    # -- backward: last layer first ---------------------------------------------------------------
    backward: list[BackwardStep] = []
    for i in reversed(range(len(work.layers))):
        layer = work.layers[i]
        kind = layer_kind(layer)
        grad_out = grad.copy()
        if kind == "BatchNorm":
            grad_in = _batchnorm_inference_backward(layer, layer_inputs[i], grad)
        else:
            grad_in = layer.backward(grad)
        grad_in = None if grad_in is None else np.array(grad_in)
        backward.append(BackwardStep(
            index=i, name=names[i], kind=kind, input_symbol=ins[i], symbol=outs[i],
            formulas=backward_formulas(layer, ins[i], outs[i]), grad_out=grad_out, grad_in=grad_in,
            grads={k: np.array(g) for k, g in layer.grads.items()}))
        if grad_in is None:
            break
        grad = grad_in

    # -- one SGD step on the copy -----------------------------------------------------------------
    named = work.named_parameters()
    param_norms = {name: norm(param) for name, param, _ in named}
    update_norms = {name: lr * norm(g) for name, _, g in named}
    SGD(lr=lr).step(work.parameters())
    loss_after, probabilities_after = _true_class_loss(work, loss_fn, inputs, label)
    work.release_buffers()
    update = UpdateRecord(
        lr=float(lr), formula=UPDATE_FORMULA, update_norms=update_norms, param_norms=param_norms,
        loss_before=float(loss_value), loss_after=float(loss_after),
        p_true_before=float(probabilities[label]), p_true_after=float(probabilities_after[label]),
        predicted_before=predicted, predicted_after=int(np.argmax(probabilities_after)),
        probabilities_after=probabilities_after)
    return Explanation(image=shown_image, inputs=inputs, label=label, label_given=label_given, classes=classes,
                       output_kind=work.output_kind, forward=forward, probabilities=probabilities,
                       predicted=predicted, loss=loss_record, backward=backward, update=update)


__all__ = ["BackwardStep", "Explanation", "ForwardStep", "LossRecord", "UpdateRecord", "explain_image",
           "probabilities_of", "symbols"]
