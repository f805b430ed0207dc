"""How ``digitnet explain`` shows an explanation: as terminal text and as a self-contained HTML page.

This module only draws what :func:`digitnet.explain.explain_image` recorded (formulas, arrays,
statistics); it computes no network math. The text is put together from one function per part
(:func:`forward_lines`, :func:`loss_lines`, :func:`backward_lines`, :func:`update_lines`, ...), which
the web page's Inside tab shows as well, so the terminal and the page print the same numbers. Arrays
are drawn as coloured cells (short vectors) or as embedded PNGs (images, feature maps, weight matrices,
kernels), so the page needs no files and no network.
"""

from __future__ import annotations

import base64
import html
import io
import re
from typing import Any

import numpy as np

from digitnet.explain import Explanation, norm

#: vectors up to this length are drawn as HTML cells; longer ones (and maps, matrices) as a PNG
MAX_CELLS = 1024
#: at most this many tiles (units, channels, kernels) per picture
MAX_TILES = 16
#: weight matrices are cut to this many rows (units) and columns (inputs) in the picture
MAX_ROWS = 256
MAX_COLUMNS = 2048


# ----------------------------------------------------------------------------------------------
# Text
# ----------------------------------------------------------------------------------------------
def shape_text(shape) -> str:
    """``(1, 784)`` -> ``"[1, 784]"``."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def preview(array: np.ndarray, count: int, more: bool | None = None) -> str:
    """The first ``count`` values, aligned, with ``...`` when there are more (or when ``more`` says so)."""
    flat = np.asarray(array, dtype=np.float64).ravel()
    shown = " ".join(f"{v:7.3f}" for v in flat[:count])
    more = flat.size > count if more is None else more
    return f"[{shown}{' ...' if more else ''}]"


def preview_slice(shape, count: int) -> tuple:
    """Which values to print: the first ``count`` of a vector ``[1, F]``; for a feature map
    ``[1, C, H, W]`` ``count`` values from the middle of channel 0's middle row (its edges are blank)."""
    if len(shape) <= 2:
        return (*([0] * (len(shape) - 1)), slice(0, count))
    middle, width = shape[-2] // 2, shape[-1]
    start = max(0, min(width - count, width // 2 - count // 2))
    return (*([0] * (len(shape) - 2)), middle, slice(start, start + count))


def _index_text(shape, count: int) -> str:
    """How to read a preview: ``"[0, :6]"`` for ``[1, 128]``, ``"[0, 0, 14, 11:17]"`` for a feature map."""
    parts = []
    for item in preview_slice(shape, count):
        if isinstance(item, slice):
            parts.append(f"{item.start or ''}:{item.stop}")
        else:
            parts.append(str(item))
    return "[" + ", ".join(parts) + "]"


def _stats_text(stats: dict) -> str:
    return f"min {stats['min']:.3f}  mean {stats['mean']:.3f}  max {stats['max']:.3f}"


def _stat_sentence(step) -> str | None:
    """The one fact that matters for an activation (how many ReLUs are off, ...), in words."""
    stats, size, symbol = step.stats, step.stats["size"], step.symbol
    if "off" in stats:
        return (f"{stats['off']} of {size} ReLUs are off ({symbol} = 0): no gradient flows back through them; "
                f"{size - stats['off']} are on")
    if "negative" in stats:
        return f"{stats['negative']} of {size} units are negative (their gradient is scaled down to the slope)"
    if "saturated" in stats:
        return f"{stats['saturated']} of {size} units are saturated (local derivative < 0.02: they barely learn)"
    return None


def _param_text(name: str, array: np.ndarray) -> str:
    return f"{name} {shape_text(array.shape)}: mean {array.mean():.4f}  std {array.std():.4f}"


def _dense_shapes(step) -> str:
    weights, bias = step.params["weights"], step.params["bias"]
    return (f"{shape_text(step.input_shape)} @ {shape_text(weights.shape)} + {shape_text(bias.shape)} "
            f"-> {shape_text(step.output_shape)}")


def forward_shapes(step) -> str:
    """``"[1, 784] @ [784, 128] + [128] -> [1, 128]"`` for Dense, ``"[1, 128] -> [1, 128]"`` otherwise."""
    if step.kind == "Dense":
        return _dense_shapes(step)
    return f"{shape_text(step.input_shape)} -> {shape_text(step.output_shape)}"


def settings_text(settings: dict) -> str:
    """``{"momentum": 0.0, "nesterov": False}`` -> ``"momentum 0, nesterov False"``."""
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in settings.items())


def gradient_of(step, formula: str) -> np.ndarray | None:
    """The array a backward formula computes: ``grad_weights ...`` -> ``step.grads["weights"]``,
    ``grad_{input symbol} ...`` -> ``step.grad_in``; None for anything else."""
    found = re.match(r"grad_(\w+)", formula)
    target = found.group(1) if found else None
    if target in step.grads:
        return step.grads[target]
    return step.grad_in if target == step.input_symbol else None


def input_line(explanation: Explanation) -> str:
    """``x  the input: 784 numbers in [0, 1] ...``: what the network is given."""
    e = explanation
    ink = int(np.count_nonzero(e.inputs))
    return (f"x  the input: {e.inputs.size} numbers in [0, 1] (pixel / 255)  {shape_text(e.forward[0].input_shape)}"
            f"  {ink} non-zero (ink), mean {e.inputs.mean():.3f}")


def forward_lines(step, values: int = 6) -> dict[str, Any]:
    """The text of one forward step: ``title``, ``formula``, ``shapes``, ``params`` (one line each),
    ``preview`` (the first ``values`` numbers of the output), ``stats`` and ``sentence`` (or None)."""
    shown = step.output[preview_slice(step.output_shape, values)]
    return {"title": f"layer {step.index}  {step.name}  {step.kind} {step.description}".rstrip(),
            "formula": step.formula, "shapes": forward_shapes(step),
            "params": [_param_text(name, param) for name, param in step.params.items()],
            "preview": f"{step.symbol}{_index_text(step.output_shape, values)} = "
                       f"{preview(shown, values, more=step.output.size > shown.size)}",
            "stats": _stats_text(step.stats), "sentence": _stat_sentence(step)}


def output_lines(explanation: Explanation) -> dict[str, Any]:
    """The output's ``formula`` line and one line per class (``probabilities``): percentage, bar, marks."""
    e = explanation
    classes = e.classes
    width = max(len(c) for c in classes)
    rows = []
    for k, p in enumerate(e.probabilities):
        marks = []
        if k == e.predicted:
            marks.append("predicted")
        if k == e.label and e.label_given:
            marks.append("true label")
        bar = "#" * int(round(float(p) * 30))
        rows.append(f"  {classes[k]:>{width}}  {100 * float(p):6.2f}%  {bar:<30}"
                    + (f"  <- {', '.join(marks)}" if marks else ""))
    return {"formula": f"{e.output_formula}  {shape_text((len(e.probabilities),))}, sums to "
                       f"{float(e.probabilities.sum()):.4f}", "probabilities": rows}


def loss_lines(explanation: Explanation, values: int | None = None) -> dict[str, Any]:
    """The loss: ``title``, ``formula``, ``settings``, ``value`` (``L = ...``), and the gradient it hands
    back: ``grad_formula`` (with its shape) and ``grad`` (its numbers and norm)."""
    e = explanation
    classes = e.classes
    label = e.label
    if e.loss.name == "cross_entropy":
        value = f"L = -log p[{label}] = -log {float(e.probabilities[label]):.4f} = {e.loss.value:.4f}"
    else:
        value = f"L = {e.loss.value:.4f}"
    count = len(e.probabilities) if values is None else values
    unlabelled = "" if e.label_given else f" (no label given: the predicted class {classes[label]})"
    return {"title": "== Loss ==" + unlabelled,
            "formula": e.loss.formula, "settings": f"({settings_text(e.loss.settings)})", "value": value,
            "grad_formula": f"{e.loss.grad_formula}  {shape_text(e.loss.grad.shape)}",
            "grad": f"= {preview(e.loss.grad, count)}  norm {norm(e.loss.grad):.4f}"}


def backward_lines(step) -> dict[str, Any]:
    """The text of one backward step: ``title``, ``formulas`` (each with the shape and norm of what it
    computes) and ``notes`` (the ReLUs that stopped the gradient; the pixels that matter most)."""
    formulas = []
    for formula in step.formulas:
        array = gradient_of(step, formula)
        detail = f"  {shape_text(array.shape)}  norm {norm(array):.4f}" if array is not None else ""
        formulas.append(f"{formula}{detail}")
    notes = []
    if step.kind == "ReLU" and step.grad_in is not None:
        zeroed = int(np.count_nonzero(step.grad_in == 0))
        notes.append(f"{zeroed} of {step.grad_in.size} gradients are 0 here (the ReLUs that were off)")
    if step.index == 0 and step.grad_in is not None:
        notes.append(f"grad_x says how the loss would change if a pixel got brighter; the largest "
                     f"|grad_x| are at {_top_pixels(step.grad_in)}")
    return {"title": f"layer {step.index}  {step.name}  {step.kind}", "formulas": formulas, "notes": notes}


def update_lines(explanation: Explanation) -> dict[str, Any]:
    """The SGD step: ``title``, ``formula``, ``settings``, one line per parameter (``params``: the size of
    its update, absolute and relative), ``result`` (loss, probability of the label, prediction) and ``note``."""
    e = explanation
    u = e.update
    classes = e.classes
    name_width = max(len(n) for n in u.update_norms)
    params = []
    for name, size in u.update_norms.items():
        relative = size / u.param_norms[name] if u.param_norms[name] else float("inf")
        ratio = f"{100 * relative:.2f}% of |param|" if np.isfinite(relative) else "param was 0"
        params.append(f"{name:<{name_width}}  |lr * grad| = {size:.4f}  ({ratio})")
    direction = "down" if u.loss_after < u.loss_before else "up"
    return {"title": f"== One SGD step on this image (lr {u.lr:g}) ==", "formula": u.formula,
            "settings": f"({settings_text(u.settings)})", "params": params,
            "result": f"loss {u.loss_before:.4f} -> {u.loss_after:.4f} ({direction});  "
                      f"p[{classes[e.label]}] {100 * u.p_true_before:.2f}% -> {100 * u.p_true_after:.2f}%;  "
                      f"prediction {classes[u.predicted_before]} -> {classes[u.predicted_after]}",
            "note": "(the step was taken on a copy: the model file is unchanged)"}


def format_text(explanation: Explanation, title: str, values: int = 6) -> str:
    """The whole explanation as terminal text (plain ASCII apart from the bars), put together from
    the parts above (which the web page's Inside tab shows too)."""
    e = explanation
    lines = [f"digitnet explain: {title}", "", "== Forward pass (as the network predicts: dropout off) ==",
             input_line(e)]
    for step in e.forward:
        text = forward_lines(step, values)
        lines += ["", text["title"], f"    {text['formula']}", f"    {text['shapes']}"]
        lines += [f"    {line}" for line in text["params"]]
        lines += [f"    {text['preview']}", f"    {text['stats']}"]
        if text["sentence"]:
            lines.append(f"    {text['sentence']}")

    output = output_lines(e)
    lines += ["", "== Output ==", output["formula"], *output["probabilities"]]

    loss = loss_lines(e)
    lines += ["", loss["title"], loss["formula"], f"    {loss['settings']}", loss["value"]]
    lines += ["", "== Backward pass (last layer first; B = 1) ==", loss["grad_formula"], f"    {loss['grad']}"]
    for step in e.backward:
        text = backward_lines(step)
        lines += ["", text["title"]]
        lines += [f"    {line}" for line in text["formulas"] + text["notes"]]

    update = update_lines(e)
    lines += ["", update["title"], update["formula"], f"    {update['settings']}"]
    lines += [f"    {line}" for line in update["params"]]
    lines += [update["result"], update["note"]]
    return "\n".join(line.rstrip() for line in lines)


def _top_pixels(grad_in: np.ndarray, count: int = 3) -> str:
    flat = np.abs(grad_in.reshape(-1))
    order = np.argsort(-flat, kind="stable")[:count]
    side = int(round(np.sqrt(flat.size)))
    if side * side == flat.size:
        return ", ".join(f"(row {i // side}, col {i % side})" for i in order)
    return ", ".join(f"#{i}" for i in order)


# ----------------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------------
_DIVERGING = np.array([[49, 54, 149], [116, 173, 209], [247, 247, 247], [244, 109, 67], [165, 0, 38]], float)
_SEQUENTIAL = np.array([[15, 23, 42], [79, 70, 229], [251, 191, 36]], float)


def colour_limit(values: np.ndarray) -> float:
    """The value drawn in the strongest colour: the 99.5th percentile of ``|values|`` (a few outliers do
    not wash out the rest), or the largest ``|value|`` if that is 0, or 1 for all zeros."""
    magnitude = np.abs(np.asarray(values, dtype=np.float64))
    limit = float(np.percentile(magnitude, 99.5)) if magnitude.size else 1.0
    return limit or float(magnitude.max(initial=0.0)) or 1.0


def colors(values: np.ndarray, signed: bool | None = None) -> np.ndarray:
    """RGB uint8 ``[..., 3]`` for ``values``: blue-white-red around 0 for signed data (the limit is
    :func:`colour_limit`), dark-indigo-amber from 0 to the maximum otherwise."""
    values = np.asarray(values, dtype=np.float64)
    if signed is None:
        signed = bool(values.size and values.min() < 0)
    limit = colour_limit(values)
    if signed:
        t, stops = (np.clip(values / limit, -1, 1) + 1) / 2, _DIVERGING
    else:
        t, stops = np.clip(values / limit, 0, 1), _SEQUENTIAL
    position = t * (len(stops) - 1)
    low = np.minimum(position.astype(int), len(stops) - 2)
    fraction = (position - low)[..., None]
    return np.round(stops[low] + fraction * (stops[low + 1] - stops[low])).astype(np.uint8)


def png_data_url(rgb: np.ndarray, scale: int, row_scale: int | None = None) -> str:
    """An RGB array ``[H, W, 3]`` enlarged ``scale`` times (rows ``row_scale`` times; nearest neighbour)
    as a ``data:image/png`` URL."""
    from PIL import Image

    big = np.repeat(np.repeat(rgb, row_scale or scale, axis=0), scale, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(big, mode="RGB").save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _tiles(maps: np.ndarray, signed: bool | None) -> np.ndarray:
    """``[N, H, W]`` maps side by side (one shared colour scale, 1-pixel white gaps): RGB ``[H, N*(W+1)-1, 3]``."""
    count, height, width = maps.shape
    rgb = colors(maps, signed)
    out = np.full((height, count * (width + 1) - 1, 3), 255, dtype=np.uint8)
    for k in range(count):
        out[:, k * (width + 1):k * (width + 1) + width] = rgb[k]
    return out


def _img(url: str, alt: str) -> str:
    return f'<img src="{url}" alt="{html.escape(alt)}">'


def array_html(array: np.ndarray, *, role: str = "values", signed: bool | None = None) -> str:
    """One array as coloured cells (a short vector) or an embedded PNG (images, maps, matrices, kernels).

    ``role`` tells how to read it: ``"input"`` (pixels: white ink on black), ``"values"`` (a sample's
    values, batch axis first), ``"param"`` (a weight tensor: Dense ``[in, out]`` or kernels ``[O, I, kh, kw]``).
    """
    a = np.asarray(array, dtype=np.float64)
    if role == "input" and a.size == 784:
        gray = np.round(np.clip(a.reshape(28, 28), 0, 1) * 255).astype(np.uint8)
        return _img(png_data_url(np.repeat(gray[..., None], 3, axis=2), 6), "the input image")
    if role == "values":
        a = a[0] if a.ndim > 1 else a
        if a.ndim == 1 and a.size == 784:
            return _img(png_data_url(colors(a.reshape(28, 28), signed), 6), "as a 28x28 image") \
                + '<span class="note">shown as 28x28</span>'
        if a.ndim == 1 and a.size <= MAX_CELLS:
            return cells_html(a, signed)
        if a.ndim == 3:   # feature maps [C, H, W]
            shown = a[:MAX_TILES]
            note = f"first {len(shown)} of {len(a)} channels" if len(shown) < len(a) else f"{len(a)} channels"
            return _img(png_data_url(_tiles(shown, signed), 4), note) + f'<span class="note">{note}</span>'
        flat = a.reshape(-1)
        columns = 64
        padded = np.concatenate([flat, np.zeros(-len(flat) % columns)])
        return _img(png_data_url(colors(padded.reshape(-1, columns), signed), 4), "values in rows of 64")
    # parameters
    if a.ndim == 1:
        return cells_html(a, signed) if a.size <= MAX_CELLS else array_html(a[None], role="values", signed=signed)
    if a.ndim == 2 and a.shape[0] == 784:   # first Dense layer: each unit's 784 weights as an image
        units = a.shape[1]
        shown = a[:, :MAX_TILES].T.reshape(-1, 28, 28)
        note = f"units 0-{len(shown) - 1} of {units}: each unit's 784 weights as a 28x28 image"
        return _img(png_data_url(_tiles(shown, True), 3), note) + f'<span class="note">{note}</span>'
    if a.ndim == 2:   # Dense [in, out]: drawn as weights.T, one row per unit
        rows = a.T
        part = rows[:MAX_ROWS, :MAX_COLUMNS]
        scale = max(1, min(8, 800 // part.shape[1], 240 // part.shape[0]))
        row_scale = max(scale, min(8, 80 // part.shape[0]))      # a few units over many inputs: taller rows
        note = "weights.T: one row per unit, one column per input" + (
            f"; the first {part.shape[0]} x {part.shape[1]} shown" if part.shape != rows.shape else "")
        return _img(png_data_url(colors(part, True), scale, row_scale), note) + f'<span class="note">{note}</span>'
    if a.ndim == 4:   # convolution kernels [O, I, kh, kw]
        kernels = a.reshape(-1, a.shape[2], a.shape[3])[:MAX_TILES * 2]
        note = f"{len(kernels)} of {a.shape[0] * a.shape[1]} kernels"
        return _img(png_data_url(_tiles(kernels, True), 10), note) + f'<span class="note">{note}</span>'
    return f'<span class="note">{shape_text(a.shape)}</span>'


def cells_html(vector: np.ndarray, signed: bool | None = None) -> str:
    """A vector as a row of coloured cells; hovering a cell shows its index and value."""
    rgb = colors(vector, signed)
    spans = "".join(f'<span style="background:rgb({r},{g},{b})" title="[{k}] {v:.4g}"></span>'
                    for k, (v, (r, g, b)) in enumerate(zip(vector, rgb, strict=True)))
    wide = " many" if len(vector) > 128 else ""
    return f'<div class="cells{wide}">{spans}</div>'


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; margin: 0; color: #1f2937;
       background: #f4f6fb; }
main { max-width: 1080px; margin: 0 auto; padding: 24px; }
h1 { font-size: 1.4rem; margin: 0 0 4px; } h2 { font-size: 1.1rem; margin: 28px 0 10px; }
.sub { color: #6b7280; margin: 0 0 16px; }
.card { background: #fff; border-radius: 12px; padding: 14px 18px; margin: 10px 0;
        box-shadow: 0 1px 3px rgba(16,24,40,.08); }
.card h3 { font-size: .95rem; margin: 0 0 6px; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .85rem; }
.formula { display: block; background: #eef2ff; color: #3730a3; padding: 6px 10px; border-radius: 6px;
           margin: 4px 0; }
.shape { color: #6b7280; font-size: .85rem; }
.row { display: flex; flex-wrap: wrap; gap: 6px 18px; align-items: flex-start; margin: 8px 0; }
.label { font-size: .8rem; color: #6b7280; min-width: 110px; }
.cells { display: flex; flex-wrap: wrap; gap: 1px; max-width: 820px; }
.cells span { width: 12px; height: 12px; border-radius: 2px; display: inline-block; }
.cells.many span { width: 7px; height: 7px; border-radius: 1px; }
img { image-rendering: pixelated; max-width: 100%; border: 1px solid #e5e7eb; border-radius: 4px; }
.note { display: block; font-size: .75rem; color: #6b7280; }
.stat { font-size: .85rem; }
table.probs { border-collapse: collapse; }
table.probs td { padding: 2px 8px; font-size: .85rem; font-variant-numeric: tabular-nums; }
.bar { height: 10px; background: #c7d2fe; border-radius: 5px; display: inline-block; }
tr.top .bar { background: #4f46e5; } tr.top td { font-weight: 700; }
.big { font-size: 1.05rem; }
.legend { font-size: .78rem; color: #6b7280; }
.legend span { display: inline-block; width: 40px; height: 10px; vertical-align: middle; margin: 0 4px; }
"""


def _row(label: str, content: str) -> str:
    return f'<div class="row"><div class="label">{html.escape(label)}</div><div>{content}</div></div>'


def render_html(explanation: Explanation, title: str, summary: str = "") -> str:
    """The explanation as one self-contained HTML page (inline CSS, pictures as data: URLs)."""
    e = explanation
    esc = html.escape
    classes = e.classes
    parts = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>digitnet explain: "
             f"{esc(title)}</title><style>{_CSS}</style></head><body><main>",
             "<h1>One image through the network, step by step</h1>", f'<p class="sub">{esc(title)}</p>',
             '<p class="legend">Colours: signed values <span style="background:linear-gradient(90deg,'
             'rgb(49,54,149),rgb(247,247,247),rgb(165,0,38))"></span> negative / 0 / positive; '
             'non-negative values <span style="background:linear-gradient(90deg,rgb(15,23,42),rgb(79,70,229),'
             'rgb(251,191,36))"></span> 0 to the largest. Hover a cell for its value.</p>']
    if summary:
        parts.append(f'<details class="card"><summary>The model</summary><pre>{esc(summary)}</pre></details>')

    parts.append("<h2>1. Forward pass</h2>")
    first = e.forward[0]
    parts.append(f'<div class="card"><h3>The input x <span class="shape">{shape_text(first.input_shape)}</span>'
                 f"</h3>{array_html(e.inputs, role='input')}<span class=\"note\">pixel / 255: 0 = background, "
                 f"1 = ink</span></div>")
    for step in e.forward:
        body = [f'<span class="formula">{esc(step.formula)}</span>',
                f'<div class="shape">{esc(forward_shapes(step))}</div>']
        for name, param in step.params.items():
            body.append(_row(f"{name} {shape_text(param.shape)}", array_html(param, role="param")))
        body.append(_row(f"{step.symbol} {shape_text(step.output_shape)}", array_html(step.output)))
        sentence = _stat_sentence(step)
        body.append(f'<div class="stat">{esc(_stats_text(step.stats))}'
                    + (f"<br>{esc(sentence)}" if sentence else "") + "</div>")
        parts.append(f'<div class="card"><h3>layer {step.index} · {esc(step.name)} · '
                     f'{esc((step.kind + " " + step.description).strip())}</h3>{"".join(body)}</div>')

    last = e.forward[-1]
    rows = []
    for k, p in enumerate(e.probabilities):
        marks = [m for m, on in (("predicted", k == e.predicted), ("true label", k == e.label and e.label_given))
                 if on]
        rows.append(f'<tr class="{"top" if k == e.predicted else ""}"><td>{esc(classes[k])}</td>'
                    f'<td>{100 * float(p):.2f}%</td><td><span class="bar" style="width:{max(1, 300 * float(p)):.0f}px">'
                    f'</span></td><td>{esc(", ".join(marks))}</td></tr>')
    parts.append(f'<h2>2. Output and loss</h2><div class="card"><span class="formula">{esc(e.output_formula)}</span>'
                 f'<div class="shape">{shape_text((len(e.probabilities),))}, sums to '
                 f'{float(e.probabilities.sum()):.4f}</div><table class="probs">{"".join(rows)}</table></div>')
    p_true = float(e.probabilities[e.label])
    numbers = (f"L = -log p[{e.label}] = -log {p_true:.4f} = {e.loss.value:.4f}" if e.loss.name == "cross_entropy"
               else f"L = {e.loss.value:.4f}")
    note = "" if e.label_given else f" (no label given: the predicted class {esc(classes[e.label])} is the target)"
    parts.append(f'<div class="card"><h3>Loss for the label {esc(classes[e.label])}{note}</h3>'
                 f'<span class="formula">{esc(e.loss.formula)}</span>'
                 f'<span class="note">{esc(settings_text(e.loss.settings))}</span>'
                 f'<p class="big">{esc(numbers)}</p></div>')

    parts.append("<h2>3. Backward pass (last layer first, B = 1)</h2>")
    parts.append(f'<div class="card"><h3>The gradient of the loss</h3><span class="formula">'
                 f'{esc(e.loss.grad_formula)}</span>'
                 + _row(f"grad_{last.symbol} {shape_text(e.loss.grad.shape)}", array_html(e.loss.grad, signed=True))
                 + f'<div class="stat">norm {norm(e.loss.grad):.4f}</div></div>')
    for step in e.backward:
        body = [f'<span class="formula">{esc(f)}</span>' for f in step.formulas]
        for key, grad in step.grads.items():
            body.append(_row(f"grad_{key} {shape_text(grad.shape)} · norm {norm(grad):.4f}",
                             array_html(grad, role="param", signed=True)))
        if step.grad_in is not None:
            body.append(_row(f"grad_{step.input_symbol} {shape_text(step.grad_in.shape)} · norm "
                             f"{norm(step.grad_in):.4f}", array_html(step.grad_in, signed=True)))
        parts.append(f'<div class="card"><h3>layer {step.index} · {esc(step.name)} · {esc(step.kind)}</h3>'
                     f'{"".join(body)}</div>')

    u = e.update
    rows = "".join(f"<tr><td><code>{esc(name)}</code></td><td>{size:.4f}</td><td>{u.param_norms[name]:.4f}</td></tr>"
                   for name, size in u.update_norms.items())
    parts.append(f'<h2>4. One SGD step on this image</h2><div class="card"><span class="formula">'
                 f'{esc(u.formula)}</span><span class="note">{esc(settings_text(u.settings))}</span>'
                 '<table class="probs"><tr><td></td><td>|lr * grad|</td>'
                 f'<td>|param|</td></tr>{rows}</table><p class="big">loss {u.loss_before:.4f} → {u.loss_after:.4f}'
                 f' · p[{esc(classes[e.label])}] {100 * u.p_true_before:.2f}% → {100 * u.p_true_after:.2f}% · '
                 f'prediction {esc(classes[u.predicted_before])} → {esc(classes[u.predicted_after])}</p>'
                 '<p class="note">The step was taken on a copy: the model file is unchanged.</p></div>')
    parts.append("</main></body></html>")
    return "\n".join(parts)
