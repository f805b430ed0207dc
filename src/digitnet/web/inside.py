"""The Inside tab: one image's forward and backward pass as JSON for the page (``POST /api/explain``).

The numbers are :func:`digitnet.explain.explain_image`'s, the record ``digitnet explain`` prints, and
every line of text is :mod:`digitnet.viz.explain`'s, the lines the command prints: the terminal, the
``--html`` page and this tab show the same numbers. This module computes no network math; it only
chooses what to send and how much:

- each array's shape, norm, min and max, always;
- its exact values (float32 numbers as JSON numbers) when it has at most :data:`MAX_VALUES` of them:
  the page draws them as cells and shows each one on hover;
- a picture (a PNG data URL, one pixel per value; the page enlarges it) for what reads as an image:
  the 28x28 input and anything of 784 values, feature maps ``[C, H, W]`` as tiles (at most
  :data:`MAX_TILES`), kernels, and long vectors in rows of 64. Tiles come with their layout so the
  page can tell which channel is under the mouse.

A weight matrix's gradient is summarised by the size of each unit's share (the norm of its column,
``|grad_weights[:, j]|``, or of its filter) and pictured for the :data:`TOP_UNITS` units whose weights
would change most. One unit (the page's choice; by default the one of the first layer whose weights
would change most) is shown whole: its incoming weights (a 28x28 picture for a first Dense layer, a
filter for a convolution) and their gradient. A response is about 50-150 kB for an MLP and
0.3-0.6 MB for a CNN.
"""

from __future__ import annotations

import base64
import io
import math
import threading
import time
from typing import Any

import numpy as np

from digitnet.errors import ConfigError, DataError
from digitnet.explain import Explanation, explain_image, norm

#: arrays with at most this many values are sent whole (exact float32 values)
MAX_VALUES = 1024
#: at most this many tiles (channels, kernels, units) in one picture
MAX_TILES = 64
#: a convolution's kernels are pictured in the forward pass when there are at most this many (a first one)
MAX_KERNELS = 32
#: tiles per row of a picture
TILE_COLUMNS = 8
#: the units pictured in a weight gradient: those whose incoming weights would change most
TOP_UNITS = 8
#: the learning rate of the explained step, unless the page asks for another
DEFAULT_LR = 0.1


class ImagesUnavailable(DataError):
    """The model's test images are not on this server (the web never downloads them): HTTP 404."""


# ----------------------------------------------------------------------------------------------
# Arrays -> JSON
# ----------------------------------------------------------------------------------------------
def _number(value: float) -> float | None:
    """A JSON-safe float: None for NaN or infinity (a diverged network), which JSON cannot carry."""
    value = float(value)
    return value if math.isfinite(value) else None


def _values(array: np.ndarray) -> list[float | None]:
    flat = np.asarray(array).ravel()
    if np.all(np.isfinite(flat)):
        return [float(v) for v in flat]
    return [_number(v) for v in flat]


def _png(rgb: np.ndarray) -> str:
    """RGB uint8 ``[H, W, 3]`` as a PNG data URL, one pixel per value (the page enlarges it)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), mode="RGB").save(buffer, format="PNG", compress_level=3)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _grid(maps: np.ndarray, signed: bool, labels: list[str] | None = None) -> dict[str, Any]:
    """``[N, H, W]`` maps as tiles in rows of :data:`TILE_COLUMNS` with 1-pixel white gaps, one shared
    colour scale: the picture and its layout (``tiles``: count, columns, tile height and width, labels).
    A picture of units' weights also says which unit each tile is (``units``) of which ``layer``."""
    from digitnet.viz.explain import colors

    count, height, width = maps.shape
    columns = min(count, TILE_COLUMNS)
    rows = math.ceil(count / columns)
    rgb = colors(maps, signed)
    sheet = np.full((rows * (height + 1) - 1, columns * (width + 1) - 1, 3), 255, dtype=np.uint8)
    for k in range(count):
        r, c = divmod(k, columns)
        sheet[r * (height + 1):r * (height + 1) + height, c * (width + 1):c * (width + 1) + width] = rgb[k]
    return {"src": _png(sheet), "width": sheet.shape[1], "height": sheet.shape[0],
            "tiles": {"count": count, "columns": columns, "height": height, "width": width,
                      "labels": labels or [str(k) for k in range(count)]}}


def _picture(array: np.ndarray, signed: bool) -> dict[str, Any] | None:
    """The picture of one sample's array (no batch axis), or None when cells say it better."""
    from digitnet.viz.explain import colors

    a = np.nan_to_num(np.asarray(array, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if a.ndim == 1 and a.size == 784:
        rgb = colors(a.reshape(28, 28), signed)
        return {"src": _png(rgb), "width": 28, "height": 28, "tiles": None, "note": "shown as 28x28"}
    if a.ndim == 2:
        a = a[None]
    if a.ndim == 3:
        shown = a[:MAX_TILES]
        if len(a) == 1:
            note = f"{a.shape[1]}x{a.shape[2]}"
        else:
            note = f"first {len(shown)} of {len(a)} channels" if len(shown) < len(a) else f"{len(a)} channels"
        return dict(_grid(shown, signed), note=note)
    if a.size > MAX_VALUES:
        flat = a.reshape(-1)
        padded = np.concatenate([flat, np.zeros(-len(flat) % 64)])
        rgb = colors(padded.reshape(-1, 64), signed)
        return {"src": _png(rgb), "width": 64, "height": rgb.shape[0], "tiles": None,
                "note": f"{flat.size} values in rows of 64"}
    return None


def tensor(array: np.ndarray, *, signed: bool | None = None, batch: bool = True,
           picture: bool = True) -> dict[str, Any]:
    """One array for the page: ``shape``, ``size``, ``norm``, ``min``, ``max``, ``signed``, ``scale`` (the
    value drawn in the strongest colour), ``values`` (all of them, or None when there are more than
    :data:`MAX_VALUES`) and ``picture`` (None for short vectors). ``batch``: the first axis is the batch
    of one image (dropped for the picture)."""
    from digitnet.viz.explain import colour_limit

    a = np.asarray(array)
    sample = a[0] if batch and a.ndim > 1 else a
    finite = np.asarray(sample, dtype=np.float64)
    if not np.all(np.isfinite(finite)):
        finite = finite[np.isfinite(finite)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (None, None)
    if signed is None:
        signed = bool(low is not None and low < 0)
    values = _values(sample) if sample.size <= MAX_VALUES else None
    shown = _picture(sample, signed) if picture else None
    return {"shape": list(a.shape), "size": int(a.size), "norm": _number(norm(finite)), "min": low, "max": high,
            "signed": signed, "scale": colour_limit(finite) if finite.size and (values or shown) else 1.0,
            "values": values, "picture": shown}


# ----------------------------------------------------------------------------------------------
# Units: a Dense layer's columns, a convolution's filters
# ----------------------------------------------------------------------------------------------
def is_unit_layer(step) -> bool:
    """A layer whose units have incoming weights: Dense ``weights [in, out]`` or Conv2D ``[O, I, kh, kw]``."""
    weights = step.params.get("weights")
    return weights is not None and weights.ndim in (2, 4)


def unit_count(step) -> int:
    weights = step.params["weights"]
    return weights.shape[1] if weights.ndim == 2 else weights.shape[0]


def unit_axis(weights: np.ndarray, index: int) -> np.ndarray:
    """Unit ``index``'s incoming weights: a Dense column ``weights[:, index]`` or a filter ``weights[index]``."""
    return weights[:, index] if weights.ndim == 2 else weights[index]


def unit_sizes(grad: np.ndarray) -> np.ndarray:
    """Each unit's share of a weight gradient: the norm of its column (Dense) or its filter (Conv2D)."""
    g = np.asarray(grad, dtype=np.float64)
    flat = g if g.ndim == 2 else g.reshape(g.shape[0], -1).T
    return np.sqrt(np.einsum("ij,ij->j", flat, flat))


def unit_layers(e: Explanation) -> list[int]:
    """Indices of the layers whose units the page can show."""
    return [step.index for step in e.forward if is_unit_layer(step)]


def unit_source(e: Explanation, index: int) -> int | None:
    """For step ``index``, the unit layer its values belong to unit by unit (the layer itself, or the one
    before it when only element-wise or per-channel layers lie between: an activation, pooling,
    BatchNorm, dropout), or None (the input, a flattened map)."""
    count = e.forward[index].output_shape[1]
    for step in reversed(e.forward[:index + 1]):
        if is_unit_layer(step):
            return step.index if unit_count(step) == count else None
        if step.kind == "Flatten" or step.output_shape[1] != count:
            return None
    return None


def input_view(e: Explanation, index: int) -> tuple[int, ...] | None:
    """How to draw one unit's incoming weights of unit layer ``index`` (Dense): as the 28x28 image when
    they come from the pixels, as ``[C, H, W]`` maps when they come from a flattened feature map."""
    step = e.forward[index]
    size = step.input_shape[1]
    for before in reversed(e.forward[:index]):
        if len(before.output_shape) == 4 and int(np.prod(before.output_shape[1:])) == size:
            return tuple(before.output_shape[1:])
        if before.kind not in ("Flatten", "Dropout") or before.params:
            return None
    return (28, 28) if size == 784 else None


def default_unit(e: Explanation) -> dict[str, int] | None:
    """The unit of the first unit layer whose incoming weights would change most."""
    layers = unit_layers(e)
    if not layers:
        return None
    backward = {step.index: step for step in e.backward}
    first = layers[0]
    grads = backward[first].grads.get("weights") if first in backward else None
    index = int(np.argmax(unit_sizes(grads))) if grads is not None else 0
    return {"layer": first, "index": index}


def _reshaped(vector: np.ndarray, view: tuple[int, ...] | None) -> np.ndarray:
    if view is None:
        return vector
    return vector.reshape(view) if view != (28, 28) else vector.reshape(-1)


def unit_payload(e: Explanation, layer: int, index: int) -> dict[str, Any]:
    """Unit ``index`` of unit layer ``layer``: its incoming weights and their gradient for this image,
    its bias and the bias's gradient, and what one SGD step would do to them."""
    step = e.forward[layer]
    backward = next(b for b in e.backward if b.index == layer)
    weights, grad = step.params["weights"], backward.grads["weights"]
    w, g = unit_axis(weights, index), unit_axis(grad, index)
    if weights.ndim == 2:
        view = input_view(e, layer)
        w, g = _reshaped(w, view), _reshaped(g, view)
        what = f"weights[:, {index}]: the {weights.shape[0]} weights into unit {index} of {step.symbol}"
    else:
        what = (f"weights[{index}]: filter {index} of {step.symbol}, {weights.shape[1]} x {weights.shape[2]} x "
                f"{weights.shape[3]} (one {weights.shape[2]}x{weights.shape[3]} kernel per input channel)")
    bias = step.params.get("bias")
    bias_grad = backward.grads.get("bias")
    lr = e.update.lr
    w_norm, g_norm = norm(w), norm(g)
    return {
        "layer": layer, "index": index, "name": step.name, "kind": step.kind, "symbol": step.symbol,
        "units": unit_count(step), "what": what,
        "weights": tensor(w, signed=True, batch=False), "grad": tensor(g, signed=True, batch=False),
        "bias": None if bias is None else float(bias[index]),
        "grad_bias": None if bias_grad is None else float(bias_grad[index]),
        "output": _number(e.forward[layer].output[0, index].mean()),
        "step": f"One SGD step moves these weights by lr * grad: |{lr:g} * grad| = {lr * g_norm:.4f}"
                + (f" ({100 * lr * g_norm / w_norm:.2f}% of their norm {w_norm:.4f})" if w_norm else ""),
    }


def _gradient_pictures(step, key: str, grad: np.ndarray, e: Explanation) -> dict[str, Any]:
    """A weight gradient for the page: its numbers, each unit's share (cells) and the units whose
    incoming weights would change most (tiles)."""
    if key != "weights" or grad.ndim not in (2, 4):
        return tensor(grad, signed=True, batch=False)
    result = tensor(grad, signed=True, batch=False, picture=False)
    sizes = unit_sizes(grad)
    result["units"] = tensor(sizes, signed=False, batch=False)
    result["units"]["layer"] = step.index
    order = [int(k) for k in np.argsort(-sizes, kind="stable")]
    if grad.ndim == 2:
        view = input_view(e, step.index)
        if view == (28, 28):
            top = order[:TOP_UNITS]
            maps = np.stack([grad[:, k].reshape(28, 28) for k in top])
            result["picture"] = dict(_grid(maps, True, [f"unit {k}" for k in top]), units=top, layer=step.index,
                                     note=f"the {len(top)} units whose weights would change most, each as 28x28")
        elif grad.shape[0] <= MAX_VALUES and grad.shape[1] <= 256:
            from digitnet.viz.explain import colors

            rgb = colors(grad.T, True)
            result["picture"] = {"src": _png(rgb), "width": rgb.shape[1], "height": rgb.shape[0], "tiles": None,
                                 "note": "grad_weights.T: one row per unit, one column per input"}
    else:
        filters, per_filter = grad.shape[:2]
        if filters * per_filter <= MAX_TILES:     # all of them, in order (a first convolution)
            chosen, note = list(range(filters)), f"all {filters} filters"
        else:
            chosen = order[:max(1, min(TOP_UNITS, MAX_TILES // per_filter))]
            note = f"the {len(chosen)} filter{'s' if len(chosen) > 1 else ''} that would change most"
        note += f", {per_filter} kernels each" if per_filter > 1 else ""
        maps = np.concatenate([grad[k] for k in chosen])[:MAX_TILES]
        labels = [f"filter {k}" + (f", in {i}" if per_filter > 1 else "") for k in chosen for i in range(per_filter)]
        result["picture"] = dict(_grid(maps, True, labels[:MAX_TILES]), note=note, layer=step.index,
                                 units=[k for k in chosen for _ in range(per_filter)][:MAX_TILES])
    return result


# ----------------------------------------------------------------------------------------------
# The whole answer
# ----------------------------------------------------------------------------------------------
def explanation_payload(e: Explanation, unit: dict[str, int] | None = None, values: int = 6) -> dict[str, Any]:
    """Everything the Inside tab shows, for an :class:`Explanation` (see the module docstring).

    ``unit``: ``{"layer": i, "index": j}`` of the unit to show whole (default :func:`default_unit`).
    ``values``: how many numbers each forward step's preview line prints (as ``digitnet explain --values``).
    """
    from digitnet.viz import explain as text

    layers = unit_layers(e)
    if unit is not None:
        layer, index = unit["layer"], unit["index"]
        if layer not in layers:
            raise ConfigError(f"unit layer {layer} is not a layer with incoming weights (those are: "
                              f"{', '.join(map(str, layers)) or 'none'})")
        if not 0 <= index < unit_count(e.forward[layer]):
            raise ConfigError(f"layer {layer} has units 0-{unit_count(e.forward[layer]) - 1}, not {index}")
    else:
        unit = default_unit(e)

    forward = []
    for step in e.forward:
        params = {}
        for key, param in step.params.items():
            shown = {"shape": list(param.shape), "norm": e.update.param_norms.get(f"layers.{step.index}.{key}")}
            if param.ndim == 4 and param.shape[0] * param.shape[1] <= MAX_KERNELS:
                filters, per_filter = param.shape[:2]
                labels = [f"filter {o}" + (f", in {i}" if per_filter > 1 else "")
                          for o in range(filters) for i in range(per_filter)]
                shown["picture"] = dict(_grid(param.reshape(-1, *param.shape[2:]), True, labels),
                                        note="the kernels", layer=step.index,
                                        units=[o for o in range(filters) for _ in range(per_filter)])
            params[key] = shown
        forward.append({
            "index": step.index, "name": step.name, "kind": step.kind, "description": step.description,
            "input_symbol": step.input_symbol, "symbol": step.symbol, "formula": step.formula,
            "input_shape": list(step.input_shape), "output_shape": list(step.output_shape),
            "stats": {k: _number(v) if isinstance(v, float) else v for k, v in step.stats.items()},
            "unit_layer": unit_source(e, step.index), "output": tensor(step.output),
            "params": params, "text": text.forward_lines(step, values)})

    backward = []
    for step in e.backward:
        lines = text.backward_lines(step)
        gradients = []
        for formula, line in zip(step.formulas, lines["formulas"], strict=True):
            array = text.gradient_of(step, formula)
            key = next((k for k, g in step.grads.items() if g is array), None)
            if array is None:
                shown = None
            elif key is not None:
                shown = _gradient_pictures(step, key, array, e)
            else:
                shown = tensor(array, signed=True)
                shown["unit_layer"] = unit_source(e, step.index - 1) if step.index > 0 else None
            gradients.append({"formula": formula, "line": line, "of": key or step.input_symbol, "tensor": shown})
        backward.append({"index": step.index, "name": step.name, "kind": step.kind, "symbol": step.symbol,
                         "input_symbol": step.input_symbol, "gradients": gradients, "text": lines,
                         "grad_out_norm": _number(norm(step.grad_out))})

    u = e.update
    return {
        "classes": list(e.classes), "label": e.label, "label_given": e.label_given, "predicted": e.predicted,
        "probabilities": [float(p) for p in e.probabilities], "output_kind": e.output_kind,
        "output_formula": e.output_formula,
        "input": {"text": text.input_line(e), "tensor": tensor(e.inputs)},
        "forward": forward,
        "output": {"text": text.output_lines(e)},
        "loss": {"name": e.loss.name, "value": _number(e.loss.value), "settings": e.loss.settings,
                 "formula": e.loss.formula, "grad_formula": e.loss.grad_formula,
                 "grad": tensor(e.loss.grad, signed=True), "text": text.loss_lines(e)},
        "backward": backward,
        "update": {"lr": u.lr, "formula": u.formula, "settings": u.settings,
                   "update_norms": {k: _number(v) for k, v in u.update_norms.items()},
                   "param_norms": {k: _number(v) for k, v in u.param_norms.items()},
                   "loss_before": _number(u.loss_before), "loss_after": _number(u.loss_after),
                   "p_true_before": _number(u.p_true_before), "p_true_after": _number(u.p_true_after),
                   "predicted_before": u.predicted_before, "predicted_after": u.predicted_after,
                   "probabilities_after": [_number(p) for p in u.probabilities_after],
                   "text": text.update_lines(e)},
        "unit_layers": [{"layer": k, "name": e.forward[k].name, "kind": e.forward[k].kind,
                         "symbol": e.forward[k].symbol, "units": unit_count(e.forward[k])} for k in layers],
        "unit": None if unit is None else unit_payload(e, unit["layer"], unit["index"]),
    }


def explain_payload(loaded, image: np.ndarray, *, label: int | None = None, lr: float = DEFAULT_LR,
                    unit: dict[str, int] | None = None) -> dict[str, Any]:
    """Explain one uint8 image ``[28, 28]`` with the served model (on a copy: the model is never
    changed) as :func:`explanation_payload`, plus the image and the time it took."""
    started = time.perf_counter()
    e = explain_image(loaded.model, image, label, lr=lr, classes=list(loaded.classes), training=loaded.training)
    result = explanation_payload(e, unit)
    result["image"] = np.asarray(image).tolist()
    result["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


# ----------------------------------------------------------------------------------------------
# The request's options and test images
# ----------------------------------------------------------------------------------------------
def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{what} must be a whole number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{what} must be a whole number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise ConfigError(f"{what} must be a whole number, got {value!r}")
    return int(number)


def explain_options(fields: dict[str, Any], classes: int) -> dict[str, Any]:
    """``label``, ``lr`` and ``unit`` of a request (JSON fields or query parameters), checked.

    ``label``: a class 0..K-1, or absent/null/"" for the default; ``lr``: > 0 (default 0.1);
    ``unit``: ``{"layer": i, "index": j}`` or ``"i:j"``. Raises ConfigError (the page's 422).
    """
    options: dict[str, Any] = {"label": None, "lr": DEFAULT_LR, "unit": None}
    label = fields.get("label")
    if label not in (None, ""):
        options["label"] = _integer(label, "label")
        if not 0 <= options["label"] < classes:
            raise ConfigError(f"label must be a class 0-{classes - 1}, got {label!r}")
    if fields.get("lr") not in (None, ""):
        from digitnet.config import CONSTRAINTS

        options["lr"] = float(CONSTRAINTS["lr"].check(fields["lr"], ""))
    unit = fields.get("unit")
    if unit not in (None, ""):
        if isinstance(unit, str) and ":" in unit:
            unit = dict(zip(("layer", "index"), unit.split(":", 1), strict=True))
        if not isinstance(unit, dict) or set(unit) != {"layer", "index"}:
            raise ConfigError('unit must be {"layer": i, "index": j} (or "i:j" in a query)')
        options["unit"] = {"layer": _integer(unit["layer"], "unit layer"),
                           "index": _integer(unit["index"], "unit index")}
    return options


_TEST_SETS: dict[str, Any] = {}
_TEST_LOCK = threading.Lock()


def dataset_image(loaded, index: Any) -> tuple[np.ndarray, int | None, str]:
    """Test image ``index`` of the model's dataset: ``(image uint8 [28, 28], its label, dataset name)``.

    The split is read once per process, never downloaded. Raises ConfigError for a bad index,
    ImagesUnavailable when the files are not on this server.
    """
    from digitnet.data.datasets import load_dataset

    index = _integer(index, "test_index")
    name = loaded.dataset or loaded.training.get("dataset") or "mnist"
    with _TEST_LOCK:
        if name not in _TEST_SETS:
            try:
                _TEST_SETS[name] = load_dataset(name, split="test", data_dir=loaded.training.get("data_dir"),
                                                download=False)
            except DataError as exc:
                raise ImagesUnavailable(f"the {name} test images are not on this server ({exc})") from None
        test = _TEST_SETS[name]
    if not 0 <= index < len(test):
        raise ConfigError(f"test_index must be 0-{len(test) - 1} ({name} test images), got {index}")
    label = None if test.labels is None else int(test.labels[index])
    return test.images[index], label, name


__all__ = ["DEFAULT_LR", "MAX_TILES", "MAX_VALUES", "ImagesUnavailable", "explain_options", "explain_payload",
           "explanation_payload", "tensor", "dataset_image", "unit_payload"]
