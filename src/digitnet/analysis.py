"""The numbers behind the pictures: predictions, hidden representations, gradients, weight changes.

Everything here is NumPy on a trained :class:`~digitnet.nn.sequential.Sequential`; :mod:`digitnet.viz`
only draws what these functions return, so the tests check the numbers here and the pictures there.

PCA of hidden representations ``H [N, D]`` (one row per image)::

    Hc = H - mean(H, axis=0)                 centre every feature
    Hc = U S V^T                             thin SVD; the rows of V^T are the principal axes
    points = Hc @ V^T[:2].T = U[:, :2] * S[:2]        [N, 2], centred (column means 0)
    explained[i] = S[i]^2 / sum(S^2)         share of the total variance along axis i
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from digitnet.data.batches import images_to_inputs
from digitnet.errors import ConfigError
from digitnet.metrics import classification_report
from digitnet.nn.activations import Activation


# ----------------------------------------------------------------------------------------------
# Predictions
# ----------------------------------------------------------------------------------------------
@dataclass
class Predictions:
    """A model's answers on a set of images.

    Attributes:
        probs: float32 ``[N, K]`` class probabilities (rows sum to 1).
        predicted: int64 ``[N]``, the argmax of ``probs`` (equal to ``model.predict``).
        confidence: float32 ``[N]``, the top probability.
        labels: the true labels ``[N]`` or None.
    """

    probs: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    labels: np.ndarray | None

    @property
    def correct(self) -> np.ndarray:
        if self.labels is None:
            raise ConfigError("these images have no labels")
        return self.predicted == self.labels


def predict(model, images: np.ndarray, labels: np.ndarray | None = None) -> Predictions:
    """Run ``model`` on uint8 images ``[N, H, W]``."""
    x = images_to_inputs(images, model.input_shape)
    probs = model.predict_proba(x)
    return Predictions(probs=probs, predicted=probs.argmax(axis=1).astype(np.int64),
                       confidence=probs.max(axis=1), labels=None if labels is None else np.asarray(labels))


def confident_mistakes(predictions: Predictions, count: int) -> np.ndarray:
    """Indices of the ``count`` wrong predictions with the highest confidence, most confident first."""
    wrong = np.flatnonzero(~predictions.correct)
    order = np.argsort(-predictions.confidence[wrong], kind="stable")
    return wrong[order[:count]]


def evaluation_metrics(predictions: Predictions, classes: list[str]) -> dict[str, Any]:
    """Accuracy, mean cross-entropy ``-log p[label]``, confusion matrix and per-class P/R/F1."""
    if predictions.labels is None:
        raise ConfigError("metrics need labelled data")
    labels = predictions.labels.astype(np.int64)
    report = classification_report(labels, predictions.predicted, classes)
    p_true = predictions.probs[np.arange(len(labels)), labels].astype(np.float64)
    report["loss"] = float(-np.mean(np.log(np.maximum(p_true, 1e-12)))) if len(labels) else float("nan")
    return report


# ----------------------------------------------------------------------------------------------
# Layers and representations
# ----------------------------------------------------------------------------------------------
def layer_label(model, index: int) -> str:
    """``"Dense 784->128"``, ``"ReLU"``, ``"Conv2D 1->8 3x3"``: a short name for layer ``index``."""
    config = model.layers[index].config()
    kind = config.get("type", type(model.layers[index]).__name__)
    if "in_features" in config and "out_features" in config:
        return f"{kind} {config['in_features']}->{config['out_features']}"
    size = config.get("kernel_size")
    if isinstance(size, int):
        size = [size, size]
    size = f" {size[0]}x{size[1]}" if isinstance(size, list | tuple) and len(size) == 2 else ""
    if "in_channels" in config and "out_channels" in config:
        return f"{kind} {config['in_channels']}->{config['out_channels']}{size}"
    if size:
        return f"{kind}{size}"
    if "rate" in config:
        return f"{kind} {config['rate']:g}"
    return kind


def hidden_output_index(model) -> int:
    """Index into ``model.forward_all(x)`` of the last hidden representation.

    That is the input of the last layer with parameters (the output layer), e.g. the 64 ReLU
    activations of a 784-128-64-10 network.
    """
    with_params = [i for i, layer in enumerate(model.layers) if layer.params]
    if len(with_params) < 2:
        raise ConfigError("the model has no hidden layer (a single layer maps inputs to outputs)")
    return with_params[-1]  # forward_all()[i] is the input of layer i


def hidden_representations(model, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """The last hidden layer's activations, flattened: float32 ``[N, D]``."""
    index = hidden_output_index(model)
    chunks = []
    for start in range(0, len(images), batch_size):
        x = images_to_inputs(images[start:start + batch_size], model.input_shape)
        for layer in model.layers[:index]:
            x = layer.forward(x, training=False)
        chunks.append(x.reshape(len(x), -1))
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)


def pca_2d(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project ``features [N, D]`` onto their first two principal axes (see the module docstring).

    Returns ``(points [N, 2] float64, explained [2])``; ``points`` has column means 0.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ConfigError(f"PCA needs at least 2 samples [N, D], got shape {list(features.shape)}")
    centred = features - features.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    components = min(2, len(s))
    points = np.zeros((len(features), 2))
    points[:, :components] = u[:, :components] * s[:components]
    total = float(np.sum(s**2))
    explained = np.zeros(2)
    if total > 0:
        explained[:components] = s[:components] ** 2 / total
    return points, explained


@dataclass
class Stage:
    """One step of a forward pass for one image: what it is and the values it produced."""

    name: str  # e.g. "layer 0: Dense 784->128"
    kind: str  # "input", "pre-activation", "activation", "output", "other"
    values: np.ndarray  # one sample's output, original shape (no batch axis)


def forward_trace(model, image: np.ndarray) -> list[Stage]:
    """Every layer's output for one uint8 image ``[H, W]``, labelled for a picture.

    A layer with parameters gives a "pre-activation" stage, an activation layer an "activation"
    stage; the last stage is marked "output". Dropout (the identity at inference) and Flatten (a
    reshape) are skipped.
    """
    image = np.asarray(image)
    outputs = model.forward_all(images_to_inputs(image[None], model.input_shape))
    stages = [Stage("input image", "input", image)]
    for i, (layer, out) in enumerate(zip(model.layers, outputs[1:], strict=True)):
        kind_name = layer.layer_type
        if kind_name in ("Dropout", "Flatten"):  # identity at inference / a mere reshape
            continue
        if layer.params:
            kind = "pre-activation"
        elif isinstance(layer, Activation):
            kind = "activation"
        else:
            kind = "other"
        stages.append(Stage(f"layer {i}: {layer_label(model, i)}", kind, out[0]))
    stages[-1].kind = "output"
    return stages


# ----------------------------------------------------------------------------------------------
# Gradients and weights
# ----------------------------------------------------------------------------------------------
def loss_for(model, config: dict | None = None):
    """The training loss: ``config["loss"]`` when given, else cross-entropy on logits, MSE otherwise."""
    from digitnet.nn.losses import make_loss

    name = (config or {}).get("loss")
    if not isinstance(name, str):
        name = "cross_entropy" if model.output_kind == "logits" else "mse"
    return make_loss(name)


def batch_gradients(model, loss, images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """dL/d(parameter) for one batch of uint8 images, by one forward/backward pass in training mode.

    Returns copies ``{"layers.0.weights": grad, ...}``; the model's weights are not changed.
    """
    x = images_to_inputs(images, model.input_shape)
    outputs = model.forward(x, training=True)
    loss.forward(outputs, np.asarray(labels))
    model.backward(loss.backward())
    grads = {name: grad.copy() for name, _, grad in model.named_parameters()}
    model.release_buffers()
    return grads


def weight_matrices(state: dict[str, np.ndarray]) -> list[str]:
    """Names of the weight tensors (2-D or more) in a state dict, in layer order."""
    def layer_number(name: str) -> int:
        parts = name.split(".")
        return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0

    names = [n for n, v in state.items() if v.ndim >= 2]
    return sorted(names, key=layer_number)


def first_weight_name(state: dict[str, np.ndarray], ndim: int | None = None) -> str:
    """The first weight tensor (of ``ndim`` dimensions when given)."""
    for name in weight_matrices(state):
        if ndim is None or state[name].ndim == ndim:
            return name
    raise ConfigError("the model has no " + (f"{ndim}-D " if ndim else "") + "weight tensor")


def pick_weight(state: dict[str, np.ndarray], layer: int | None) -> str:
    """The weight tensor of layer index ``layer`` (as in ``model.layers``), or the first one."""
    names = weight_matrices(state)
    if not names:
        raise ConfigError("the model has no weight matrix")
    if layer is None:
        return names[0]
    for name in names:
        if name.split(".")[1] == str(layer):
            return name
    choices = ", ".join(n.split(".")[1] for n in names)
    raise ConfigError(f"layer {layer} has no weights (layers with weights: {choices})")


def weight_change(initial: dict[str, np.ndarray], final: dict[str, np.ndarray], name: str) -> dict[str, Any]:
    """Before, after and ``after - before`` of one weight tensor, plus summary numbers."""
    if name not in initial or name not in final:
        raise ConfigError(f"no tensor {name} in both weight files")
    before, after = initial[name], final[name]
    if before.shape != after.shape:
        raise ConfigError(f"{name} has shape {list(before.shape)} at the start but {list(after.shape)} "
                          f"at the end: not the same architecture")
    diff = after - before
    norm_before = float(np.linalg.norm(before))
    return {"name": name, "before": before, "after": after, "diff": diff,
            "relative_change": float(np.linalg.norm(diff)) / norm_before if norm_before else float("inf")}


def layer_table(model) -> list[dict[str, Any]]:
    """One row per layer: index, type, short label, output shape (one sample) and parameter count."""
    rows = []
    for i, (layer, shape) in enumerate(zip(model.layers, model.output_shapes(), strict=True)):
        rows.append({"index": i, "type": layer.layer_type,
                     "label": layer_label(model, i), "output_shape": tuple(shape),
                     "params": int(layer.num_params())})
    return rows
