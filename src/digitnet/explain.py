"""One image through the network, step by step: the numbers of the forward pass, the loss, the
backward pass and one SGD step, as a structured record. Presentation (text, the HTML page) lives in
:mod:`digitnet.viz.explain`; this module only computes and records.

For one image ``x`` (a batch of ``B = 1``, shape ``[1, *input_shape]``) and its label ``y``::

    forward    out[0] = x;  out[i+1] = layers[i].forward(out[i])          every layer, in order
    output     p = model.predict_proba(x)                                   [1, K]
    loss       L = loss.forward(out[-1], y);  grad = loss.backward()        dL/d(outputs) [1, K]
    backward   grad_in = layers[i].backward(grad_out), last layer first; each layer also sets
               its grads (grad_weights, grad_bias, ...)
    step       one plain SGD step on every parameter, then the loss again

The forward pass is the network *as it predicts* (inference): Dropout is the identity and
BatchNorm uses its running statistics, so the probabilities are exactly ``model.predict_proba(x)``.
The backward pass differentiates that same function. It works for any :class:`Sequential`
(convolutions, pooling, ...) and runs the reference layers of :mod:`digitnet.nn` (the readable
ones, never the tuned kernels) on a copy, so the model you pass is never changed.

Every formula is the registry's (:mod:`digitnet.nn.registry`), written there in the names
``x`` (input), ``y`` (output), ``grad_x``, ``grad_y`` and renamed here to the step's symbols, so
a new registered layer or activation is explained without touching this module. The one rule
written here is how BatchNorm and Dropout compute *when predicting* (:data:`PREDICTING_RULES`):
the registry describes their training function.

Symbols follow the textbook: ``x`` is the input, the output of the n-th layer with parameters is
``z{n}`` (a pre-activation) and the output of the layer after it ``a{n}`` (an activation); further
parameter-free layers get ``a{n}_2``, ``a{n}_3``, ...
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from digitnet.data.batches import images_to_inputs
from digitnet.errors import ConfigError, DataError
from digitnet.nn.losses import Loss, make_loss
from digitnet.nn.optim import SGD
from digitnet.nn.registry import entry_of
from digitnet.nn.sequential import Sequential

#: Forward rule and gradient rules (in the registry's names) of the layers whose predicting function
#: differs from the training function the registry describes: BatchNorm's statistics and Dropout's
#: mask are constants when predicting, so their gradients are simpler. These layers run in
#: inference mode on the explained copy; BatchNorm's gradient is :func:`_batchnorm_predicting_backward`.
PREDICTING_RULES: dict[str, tuple[str, str]] = {
    "BatchNorm": ("y = gamma * x_hat + beta,  x_hat = (x - running_mean) / sqrt(running_var + eps)",
                  "grad_gamma = sum(grad_y * x_hat);  grad_beta = sum(grad_y);  "
                  "grad_x = grad_y * gamma / sqrt(running_var + eps)"),
    "Dropout": ("y = x   (dropout is off when predicting)", "grad_x = grad_y"),
}

#: how ``Sequential.predict_proba`` turns each kind of output ``{z}`` into probabilities (in words)
OUTPUT_RULES = {"logits": "p = softmax({z})", "softmax": "p = {z}", "sigmoid": "p = {z} / sum({z})"}


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
        formula: the layer's registered forward rule with the step's symbols, e.g.
            ``"z1 = x @ weights + bias"``.
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

    ``formula`` and ``grad_formula`` are the loss's registered rules with the output's symbol and
    ``label``; ``settings`` are the loss's (``label_smoothing``, ``reduction``). ``grad`` is
    ``dL/d(outputs)`` ``[1, K]``: ``softmax(z) - onehot(label)`` for cross-entropy on logits,
    ``a - onehot(label)`` for MSE (``B = 1``).
    """

    name: str
    formula: str
    value: float
    grad_formula: str
    grad: np.ndarray
    target: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class BackwardStep:
    """One layer of the backward pass (the steps run from the last layer to the first).

    Attributes:
        formulas: the gradients this layer computes (its registered gradient rules with the step's
            symbols), parameter gradients first.
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
    """One plain SGD step on the image (``param -= lr * grad``), and what it changed.

    ``formula`` is SGD's registered update and ``settings`` the step's (momentum 0, no weight decay,
    which reduce it to ``param -= lr * grad``). ``update_norms[name]`` is ``||lr * grad||`` and
    ``param_norms[name]`` is ``||param||`` before the step (names as in ``model.named_parameters()``:
    ``"layers.0.weights"``).
    """

    lr: float
    formula: str
    settings: dict[str, Any]
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
    equals ``model.predict_proba(inputs)[0]`` (``output_formula`` says how, e.g. ``"p = softmax(z2)"``);
    ``backward`` runs from the last layer to the first.
    """

    image: np.ndarray | None
    inputs: np.ndarray
    label: int
    label_given: bool
    classes: list[str]
    output_kind: str
    forward: list[ForwardStep]
    output_formula: str
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
            "output_formula": self.output_formula,
            "probabilities": [float(p) for p in self.probabilities], "predicted": self.predicted,
            "loss": {"name": self.loss.name, "formula": self.loss.formula, "settings": self.loss.settings,
                     "value": self.loss.value,
                     "grad_formula": self.loss.grad_formula, "grad": [float(g) for g in self.loss.grad.ravel()]},
            "backward": [{"index": s.index, "name": s.name, "kind": s.kind, "formulas": s.formulas,
                          "grad_out_shape": list(s.grad_out.shape), "grad_out_norm": norm(s.grad_out),
                          "grad_in_shape": None if s.grad_in is None else list(s.grad_in.shape),
                          "grad_in_norm": None if s.grad_in is None else norm(s.grad_in),
                          "grads": {k: {"shape": list(g.shape), "norm": norm(g), "values": head(g)}
                                    for k, g in s.grads.items()}}
                         for s in self.backward],
            "update": {"lr": self.update.lr, "formula": self.update.formula, "settings": self.update.settings,
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
    return layer.layer_type


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


def substitute(text: str, names: dict[str, str]) -> str:
    """``text`` with each variable of ``names`` renamed, also inside ``grad_v``, ``dL/dv`` (written
    ``grad_`` too), the indexed ``v_k``, ``v_j`` and the derived ``v_hat``, ``v_pad``; other words
    are left alone (``max``, ``exp``).

    ``substitute("grad_x = grad_y * (y > 0)", {"x": "z1", "y": "a1"}) == "grad_z1 = grad_a1 * (a1 > 0)"``
    """
    variables = "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
    pattern = re.compile(rf"(?<!\w)(grad_|dL/d)?({variables})(?=(?:_[jk]|_hat|_pad)?(?!\w))")
    return pattern.sub(lambda m: ("grad_" if m.group(1) else "") + names[m.group(2)], text)


def rules(layer) -> tuple[str, list[str]]:
    """The layer's forward rule and its gradient rules (parameter gradients first, then ``grad_x``),
    in the registry's names ``x`` and ``y``: the registered ones, or :data:`PREDICTING_RULES`."""
    kind = layer_kind(layer)
    found = entry_of(layer)
    if kind in PREDICTING_RULES:
        forward, gradient = PREDICTING_RULES[kind]
    elif found is not None and found.gradient:
        forward, gradient = found.formula, found.gradient
    else:   # a layer registered outside digitnet.nn, without formulas: name what it computes
        forward = f"y = {kind}(x)"
        gradient = ";  ".join([f"grad_{key} = dL/d{key}" for key in layer.params]
                              + [f"grad_x = {kind}.backward(grad_y)"])
    return forward, [part.strip() for part in gradient.split(";") if part.strip()]


def forward_formula(layer, x: str, y: str) -> str:
    """The layer's forward rule with input symbol ``x`` and output symbol ``y``."""
    return substitute(rules(layer)[0], {"x": x, "y": y})


def backward_formulas(layer, x: str, y: str) -> list[str]:
    """The layer's gradient rules with input symbol ``x`` and output symbol ``y``."""
    return [substitute(rule, {"x": x, "y": y}) for rule in rules(layer)[1]]


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


def default_loss(model: Sequential, training: dict[str, Any] | None = None) -> Loss:
    """The loss the model was trained with (``training["loss"]`` and ``["loss_reduction"]``), else
    cross-entropy for logits and MSE for softmax/sigmoid outputs. Label smoothing is left out: the
    explanation shows the loss of the plain label."""
    training = training or {}
    name = training.get("loss")
    if not isinstance(name, str):
        name = "cross_entropy" if model.output_kind == "logits" else "mse"
    reduction = training.get("loss_reduction")
    return make_loss(name, reduction=reduction if isinstance(reduction, str) else "mean")


def loss_formulas(loss: Loss, symbol: str) -> tuple[str, str]:
    """``(loss formula, gradient formula)``: the loss's registered rules with the output's symbol
    ``symbol`` (``"z2"``) for its input (the variable of ``dL/dz``) and ``label`` for ``y``."""
    found = entry_of(loss)
    variable = re.match(r"dL/d(\w+)", found.gradient) if found is not None else None
    if variable is None:
        return f"L = {type(loss).__name__}({symbol}, label)", f"grad_{symbol} = dL/d{symbol}"
    names = {variable.group(1): symbol, "y": "label"}
    return substitute(found.formula, names), substitute(found.gradient, names)


def settings_of(thing) -> dict[str, Any]:
    """The registered settings of a loss or optimizer with their values (``{"reduction": "mean"}``)."""
    found = entry_of(thing)
    return {} if found is None else {s.name: getattr(thing, s.name) for s in found.settings}


def copy_model(model: Sequential) -> Sequential:
    """An independent copy: the same architecture, parameters and buffers (running statistics)."""
    copy = Sequential.from_config(model.config(), rng=np.random.default_rng(0))
    copy.load_state_dict({name: np.array(value) for name, value in model.state_dict().items()})
    return copy


def _batchnorm_predicting_backward(layer, x: np.ndarray, grad_out: np.ndarray) -> np.ndarray:
    """BatchNorm's gradients as it predicts (:data:`PREDICTING_RULES`). The running statistics are
    constants, so ``y`` is ``gamma * x_hat + beta`` with ``x_hat`` an affine function of ``x``; the
    reference backward also differentiates the batch statistics, which depend on ``x``. Sets
    ``layer.grads`` (new arrays, as every reference backward does); returns ``grad_x``."""
    g = layer.as_3d(grad_out).astype(np.float64)
    inv_std = 1.0 / np.sqrt(layer.buffers["running_var"].astype(np.float64) + layer.eps)[:, None]
    x_hat = (layer.as_3d(x) - layer.buffers["running_mean"][:, None]) * inv_std
    dtype = layer.params["gamma"].dtype
    layer.grads = {"gamma": (g * x_hat).sum(axis=(0, 2)).astype(dtype), "beta": g.sum(axis=(0, 2)).astype(dtype)}
    return (g * layer.params["gamma"][:, None] * inv_std).reshape(grad_out.shape).astype(grad_out.dtype)


def _loss_and_probabilities(model: Sequential, loss: Loss, inputs: np.ndarray, label: int) -> tuple[float, np.ndarray]:
    value = loss.forward(model.forward(inputs, training=False), np.array([label]))
    return value, model.predict_proba(inputs)[0]


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

    The step is plain SGD whatever the model was trained with: it shows the direction of the
    gradient, and one step of an adaptive optimizer from empty state would not (RMSprop's and Adam's
    first steps are about ``lr * sign(grad)`` scaled by a constant).

    Args:
        model: any Sequential; it is not modified.
        image: uint8 ``[28, 28]`` (white on black, as MNIST), or inputs already in the model's
            layout: float ``[*input_shape]`` or ``[1, *input_shape]`` in [0, 1].
        label: the true class ``0..K-1``; None uses the predicted class (``label_given`` False).
        lr: the learning rate of the SGD step, > 0.
        loss: a Loss or its name; default: :func:`default_loss` (what the model was trained with).
        classes: class names (default ``"0"..."K-1"``).
        training: the model's training configuration (a model file's ``training`` metadata),
            used to choose the loss and its reduction.

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
    names = work.layer_names()
    outs = symbols(work)
    ins = ["x", *outs[:-1]]
    # first: predict_proba runs its own forward, which would replace what the layers keep for backward
    probabilities = work.predict_proba(inputs)[0]

    # -- forward: the network as it predicts, each layer keeping what its backward needs ----------
    forward: list[ForwardStep] = []
    layer_inputs: list[np.ndarray] = []
    x = inputs
    for i, layer in enumerate(work.layers):
        kind = layer_kind(layer)
        layer_inputs.append(x)
        y = layer.forward(x, training=kind not in PREDICTING_RULES)
        forward.append(ForwardStep(
            index=i, name=names[i], kind=kind, description=layer.describe(), input_symbol=ins[i], symbol=outs[i],
            formula=forward_formula(layer, ins[i], outs[i]), input_shape=tuple(x.shape), output_shape=tuple(y.shape),
            output=np.array(y), params={k: np.array(v) for k, v in layer.params.items()},
            stats=output_stats(kind, y)))
        x = y
    outputs = forward[-1].output
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
                             grad_formula=grad_formula, grad=grad.copy(), target=target,
                             settings=settings_of(loss_fn))

    # -- backward: last layer first ---------------------------------------------------------------
    backward: list[BackwardStep] = []
    for i in reversed(range(len(work.layers))):
        layer = work.layers[i]
        kind = layer_kind(layer)
        grad_out = grad.copy()
        if kind == "BatchNorm":
            grad_in = _batchnorm_predicting_backward(layer, layer_inputs[i], grad)
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
    sgd = SGD(lr=lr)
    sgd.step(work.parameters())
    loss_after, probabilities_after = _loss_and_probabilities(work, loss_fn, inputs, label)
    work.release_buffers()
    update = UpdateRecord(
        lr=float(lr), formula=entry_of(sgd).formula, settings=settings_of(sgd),
        update_norms=update_norms, param_norms=param_norms,
        loss_before=float(loss_value), loss_after=float(loss_after),
        p_true_before=float(probabilities[label]), p_true_after=float(probabilities_after[label]),
        predicted_before=predicted, predicted_after=int(np.argmax(probabilities_after)),
        probabilities_after=probabilities_after)
    return Explanation(image=shown_image, inputs=inputs, label=label, label_given=label_given, classes=classes,
                       output_kind=work.output_kind, forward=forward,
                       output_formula=OUTPUT_RULES[work.output_kind].format(z=outs[-1]), probabilities=probabilities,
                       predicted=predicted, loss=loss_record, backward=backward, update=update)


__all__ = ["PREDICTING_RULES", "BackwardStep", "Explanation", "ForwardStep", "LossRecord", "UpdateRecord",
           "explain_image", "substitute", "symbols"]
