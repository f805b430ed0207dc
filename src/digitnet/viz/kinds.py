"""Every picture by name: what it needs, and how it is made from a :class:`PlotSource`.

Each ``render_*`` gathers the numbers (from :mod:`digitnet.analysis` and :mod:`digitnet.robustness`)
and hands them to a draw function; no math happens here. ``KINDS`` is the registry that
``digitnet plot`` and the report use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from digitnet.errors import ConfigError
from digitnet.viz.source import HISTORY_FILE, INITIAL_FILE, PlotSource


@dataclass
class PlotOptions:
    """Choices shared by the pictures (each uses the ones that make sense for it).

    index: which test image (forward, feature-maps, the robustness example) or the first one shown
    (predictions). layer: which layer's weights (index into ``model.layers``). count: how many
    images/units/points (None: the picture's default). seed: for noise and sampling.
    """

    index: int = 0
    layer: int | None = None
    count: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class PlotKind:
    """One picture: its name, a one-line description, what it needs and its render function.

    ``needs`` may hold "history" (history.json), "initial" (initial.safetensors), "data" (the
    labelled test split), "cnn" (a convolutional first layer) and "dense-input" (a Dense first layer
    on 784 pixels).
    """

    name: str
    title: str
    description: str
    needs: tuple[str, ...]
    render: Callable[[PlotSource, PlotOptions], object]
    default_count: int | None = None

    def unavailable(self, source: PlotSource) -> str | None:
        """Why this picture cannot be drawn for ``source`` (None when it can)."""
        if "history" in self.needs and not source.has(HISTORY_FILE):
            return f"needs a run directory with {HISTORY_FILE}"
        if "initial" in self.needs and not source.has(INITIAL_FILE):
            return f"needs a run directory with {INITIAL_FILE} (the weights before training)"
        if "cnn" in self.needs and _conv_kernels_name(source) is None:
            return "needs a convolutional network (its first weight tensor is not a 4-D kernel)"
        if "dense-input" in self.needs and _dense_input_name(source) is None:
            return "needs a first Dense layer on flat 28x28 images"
        if "hidden" in self.needs and len([lay for lay in source.model.layers if lay.params]) < 2:
            return "needs a hidden layer"
        return None


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _conv_kernels_name(source: PlotSource) -> str | None:
    state = source.model.state_dict()
    from digitnet.analysis import weight_matrices

    names = weight_matrices(state)
    return names[0] if names and state[names[0]].ndim == 4 else None


def _dense_input_name(source: PlotSource) -> str | None:
    from digitnet.analysis import weight_matrices

    state = source.model.state_dict()
    names = weight_matrices(state)
    if names and state[names[0]].ndim == 2 and state[names[0]].shape[0] == 784:
        return names[0]
    return None


def _image_index(source: PlotSource, options: PlotOptions) -> int:
    count = len(source.test_data())
    if not 0 <= options.index < count:
        raise ConfigError(f"--index {options.index} is outside the test set (0-{count - 1})")
    return options.index


def _count(options: PlotOptions, default: int) -> int:
    count = default if options.count is None else options.count
    if count < 1:
        raise ConfigError(f"--count must be >= 1, got {count}")
    return count


# ----------------------------------------------------------------------------------------------
# renderers
# ----------------------------------------------------------------------------------------------
def render_architecture(source: PlotSource, options: PlotOptions):
    from digitnet.viz.architecture import draw_architecture

    return draw_architecture(source.model, source.classes)


def render_forward(source: PlotSource, options: PlotOptions):
    from digitnet.analysis import forward_trace
    from digitnet.viz.forward import draw_forward

    data = source.test_data()
    index = _image_index(source, options)
    stages = forward_trace(source.model, data.images[index])
    probs = source.predictions().probs[index]
    probs_title = {"logits": "softmax probabilities", "softmax": "softmax output",
                   "sigmoid": "sigmoid outputs / their sum"}[source.model.output_kind]
    return draw_forward(stages, probs, source.classes, label=int(data.labels[index]), index=index,
                        probs_title=probs_title)


def render_grad_norms(source: PlotSource, options: PlotOptions):
    from digitnet.viz.gradients import draw_grad_norms

    history = source.history("the gradient-norm picture")
    if not history.grad_norms:
        raise ConfigError(f"{source.run_dir / HISTORY_FILE} has no gradient norms (trained with "
                          f"record_grad_norms=False)")
    return draw_grad_norms(history.grad_norms)


def render_grad_histograms(source: PlotSource, options: PlotOptions):
    from digitnet.analysis import batch_gradients, loss_for
    from digitnet.viz.gradients import draw_grad_histograms

    data = source.test_data()
    batch = _count(options, 128)
    rng = np.random.default_rng(options.seed)
    idx = rng.choice(len(data), size=min(batch, len(data)), replace=False)
    grads = source.cached(f"grads-{batch}-{options.seed}", lambda: batch_gradients(
        source.model, loss_for(source.model, source.config), data.images[idx], data.labels[idx]))
    return draw_grad_histograms(grads, len(idx))


def render_weight_change(source: PlotSource, options: PlotOptions):
    from digitnet.analysis import pick_weight, weight_change
    from digitnet.viz.weights import draw_weight_change

    initial = source.initial_state("the weight-change picture")
    final = source.model.state_dict()
    return draw_weight_change(weight_change(initial, final, pick_weight(final, options.layer)))


def render_weight_histograms(source: PlotSource, options: PlotOptions):
    from digitnet.analysis import weight_matrices
    from digitnet.viz.weights import draw_weight_histograms

    initial = source.initial_state("the weight-histogram picture")
    final = source.model.state_dict()
    return draw_weight_histograms(initial, final, weight_matrices(final))


def render_first_layer(source: PlotSource, options: PlotOptions):
    from digitnet.viz.weights import draw_input_weights

    name = _dense_input_name(source)
    if name is None:
        raise ConfigError("first-layer weights as images need a first Dense layer on 784 pixels "
                          "(for a CNN use the 'filters' picture)")
    return draw_input_weights(source.model.state_dict()[name], _count(options, 64), name=name)


def render_predictions(source: PlotSource, options: PlotOptions):
    from digitnet.viz.predictions import draw_predictions

    data = source.test_data()
    start = _image_index(source, options)
    stop = min(start + _count(options, 24), len(data))
    p = source.predictions()
    return draw_predictions(data.images[start:stop], data.labels[start:stop], p.predicted[start:stop],
                            p.confidence[start:stop], source.classes, first_index=start)


def render_mistakes(source: PlotSource, options: PlotOptions):
    from digitnet.analysis import confident_mistakes
    from digitnet.viz.predictions import draw_mistakes

    data = source.test_data()
    p = source.predictions()
    idx = confident_mistakes(p, _count(options, 24))
    return draw_mistakes(data.images[idx], data.labels[idx], p.predicted[idx], p.confidence[idx],
                         source.classes, idx, int(np.count_nonzero(~p.correct)), len(data))


def render_curves(source: PlotSource, options: PlotOptions):
    from digitnet.viz.curves import draw_curves

    return draw_curves(source.history("the learning-curve picture"))


def render_confusion(source: PlotSource, options: PlotOptions):
    from digitnet.metrics import confusion_matrix
    from digitnet.viz.confusion import draw_confusion

    p = source.predictions()
    return draw_confusion(confusion_matrix(p.labels, p.predicted, len(source.classes)), source.classes)


def render_embedding(source: PlotSource, options: PlotOptions):
    from digitnet.analysis import hidden_output_index, hidden_representations, layer_label, pca_2d
    from digitnet.viz.embedding import draw_embedding

    data = source.test_data()
    count = min(_count(options, 3000), len(data))
    idx = np.random.default_rng(options.seed).choice(len(data), size=count, replace=False)
    points, explained = pca_2d(hidden_representations(source.model, data.images[idx]))
    layer = hidden_output_index(source.model) - 1
    while layer > 0 and source.model.layers[layer].config().get("type") == "Dropout":  # identity at inference
        layer -= 1
    name = f"layer {layer} ({layer_label(source.model, layer)})"
    return draw_embedding(points, data.labels[idx], source.classes, explained, name)


def robustness_data(source: PlotSource, options: PlotOptions) -> dict:
    """The robustness curves of ``source`` (cached per count and seed)."""
    from digitnet.robustness import robustness_curves

    count = _count(options, 2000)
    return source.cached(f"robustness-{count}-{options.seed}", lambda: robustness_curves(
        source.model, source.test_data(), np.random.default_rng(options.seed), count=count))


def render_robustness(source: PlotSource, options: PlotOptions):
    from digitnet.robustness import damage_examples
    from digitnet.viz.robustness import draw_robustness

    curves = robustness_data(source, options)
    image = source.test_data().images[_image_index(source, options)]
    return draw_robustness(curves, damage_examples(image, curves, np.random.default_rng(options.seed)))


def render_coverage(source: PlotSource, options: PlotOptions):
    from digitnet.robustness import coverage_curve
    from digitnet.viz.robustness import draw_coverage

    p = source.predictions()
    return draw_coverage(source.cached("coverage", lambda: coverage_curve(p.probs, p.labels)))


def render_filters(source: PlotSource, options: PlotOptions):
    from digitnet.viz.cnn import draw_filters

    name = _conv_kernels_name(source)
    if name is None:
        raise ConfigError("the filters picture needs a convolutional network (for an MLP use 'first-layer')")
    return draw_filters(source.model.state_dict()[name], name=name, count=_count(options, 64))


def render_feature_maps(source: PlotSource, options: PlotOptions):
    from digitnet.analysis import forward_trace
    from digitnet.viz.cnn import draw_feature_maps

    if _conv_kernels_name(source) is None:
        raise ConfigError("the feature-maps picture needs a convolutional network")
    index = _image_index(source, options)
    stages = forward_trace(source.model, source.test_data().images[index])
    return draw_feature_maps(stages, max_channels=_count(options, 8), index=index)


_ALL = [
    PlotKind("architecture", "Architecture", "the layers as columns of neurons (MLP) or boxes with output shapes "
             "(CNN), with sizes, activations and parameter counts", (), render_architecture),
    PlotKind("curves", "Learning curves", "training and validation loss and accuracy per epoch",
             ("history",), render_curves),
    PlotKind("forward", "Forward pass", "one test image (--index) flowing through every layer: "
             "pre-activations, activations, output probabilities", ("data",), render_forward),
    PlotKind("grad-norms", "Gradient norms", "backpropagation: each parameter's mean gradient norm per epoch "
             "(log scale)", ("history",), render_grad_norms),
    PlotKind("grad-histograms", "Weight gradients", "backpropagation: histograms of dL/dW for one batch "
             "(--count images)", ("data",), render_grad_histograms, 128),
    PlotKind("weight-change", "Weight change", "a layer's weights (--layer) at initialisation, after training, "
             "and the difference", ("initial",), render_weight_change),
    PlotKind("weight-histograms", "Weight distributions", "histograms of every weight matrix at the start "
             "and the end of training", ("initial",), render_weight_histograms),
    PlotKind("first-layer", "First-layer weights", "each first-layer neuron's 784 weights as a 28x28 image "
             "(--count units)", ("dense-input",), render_first_layer, 64),
    PlotKind("predictions", "Predictions", "test images from --index with true label, prediction and "
             "confidence; mistakes in red", ("data",), render_predictions, 24),
    PlotKind("mistakes", "Most confident mistakes", "the wrong answers the model was surest of",
             ("data",), render_mistakes, 24),
    PlotKind("confusion", "Confusion matrix", "counts and row-normalised rates of true vs predicted class",
             ("data",), render_confusion),
    PlotKind("embedding", "Hidden representations", "PCA map of the last hidden layer for --count test "
             "images, coloured by class", ("data", "hidden"), render_embedding, 3000),
    PlotKind("robustness", "Robustness", "test accuracy as noise, rotation and stroke thickness grow "
             "(--count images)", ("data",), render_robustness, 2000),
    PlotKind("coverage", "Confidence threshold", "accuracy against coverage when the model may answer "
             "'not sure'", ("data",), render_coverage),
    PlotKind("filters", "Convolution filters", "CNN only: the learned first-layer filters", ("cnn",),
             render_filters, 64),
    PlotKind("feature-maps", "Feature maps", "CNN only: one image's (--index) feature maps layer by layer",
             ("cnn", "data"), render_feature_maps, 8),
]

#: Every picture by name, in the order of the report.
KINDS: dict[str, PlotKind] = {kind.name: kind for kind in _ALL}


# ----------------------------------------------------------------------------------------------
# pictures of a sweep directory (written by `digitnet sweep`), not of one model
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepKind:
    """One picture of a sweep directory: its name, a description and its render function."""

    name: str
    title: str
    description: str
    render: Callable[[object], object]


def render_sweep(sweep_dir) -> object:
    """Test accuracy against each swept setting and every setting's learning curves (see viz/sweep.py)."""
    from pathlib import Path

    from digitnet.sweep import curve_metric, group_curves, group_rows, read_histories, read_results, read_sweep
    from digitnet.viz.sweep import draw_sweep

    info = read_sweep(sweep_dir)
    rows = read_results(sweep_dir)
    if not rows:
        raise ConfigError(f"{sweep_dir} has no finished trial yet (results.json is empty)")
    keys = list(info.get("keys") or [])
    histories = read_histories(sweep_dir, rows)
    metric = curve_metric(list(histories.values()))
    curves = group_curves(rows, histories, keys, metric)
    preset = (info.get("base") or {}).get("preset")
    title = f"Sweep {Path(sweep_dir).name}" + (f" ({preset})" if preset else "")
    groups = sorted((g for g in group_rows(rows, keys) if g.accuracies), key=lambda g: -g.mean)[:10]
    width = max((len(g.group) for g in groups), default=0)
    best = [f"{g.group:<{width}}  {g.mean:.4f} +- {g.std:.4f}" for g in groups]
    return draw_sweep(rows, keys, curves, metric, random_keys=list(info.get("random") or {}), title=title,
                      order=dict(info.get("grid") or {}), best=best)


#: The pictures of a sweep directory, by name (``digitnet report SWEEP_DIR`` draws them).
SWEEP_KINDS: dict[str, SweepKind] = {
    "sweep": SweepKind("sweep", "Sweep", "test accuracy against each swept setting (mean, lowest and highest "
                       "seed) and every setting's learning curves (mean with a band over seeds)", render_sweep),
}


def render(kind: str, source: PlotSource, options: PlotOptions | None = None):
    """The Figure of picture ``kind`` for ``source``; ConfigError with the reason if it cannot be drawn."""
    if kind not in KINDS:
        raise ConfigError(f"unknown picture {kind!r} (choose from {', '.join(KINDS)})")
    spec = KINDS[kind]
    reason = spec.unavailable(source)
    if reason is not None:
        raise ConfigError(f"cannot draw '{kind}' for {source.name}: it {reason}")
    return spec.render(source, options or PlotOptions())
