"""A Keras-style summary of a model: its layers, output shapes and parameter counts."""

from __future__ import annotations

from digitnet.nn.base import Layer


def _snake_case(class_name: str) -> str:
    """``"LeakyReLU"`` -> ``"leaky_relu"``, ``"MaxPool2D"`` -> ``"max_pool2d"``: a word starts at a
    capital that follows a lower-case letter and precedes one."""
    out = []
    for i, char in enumerate(class_name):
        starts_word = (0 < i < len(class_name) - 1 and char.isupper() and class_name[i - 1].islower()
                       and class_name[i + 1].islower())
        out.append("_" + char if starts_word else char)
    return "".join(out).lower()


def layer_names(layers: list[Layer]) -> list[str]:
    """Keras-style names, numbered per type: ``["dense_0", "relu_0", "dense_1", ...]``."""
    counts: dict[str, int] = {}
    names = []
    for layer in layers:
        base = _snake_case(layer.layer_type)
        names.append(f"{base}_{counts.get(base, 0)}")
        counts[base] = counts.get(base, 0) + 1
    return names


def summary(model) -> str:
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
    rows = [("input", "", str([None, *model.input_shape]), "0")]
    shapes = model.output_shapes()
    for name, layer, shape in zip(layer_names(model.layers), model.layers, shapes, strict=True):
        kind = f"{layer.layer_type} {layer.describe()}".strip()
        params = layer.num_params() + layer.num_buffer_values()
        rows.append((name, kind, str([None, *shape]), f"{params:,}"))
    widths = [max(len(r[c]) for r in (header, *rows)) for c in range(4)]

    def fmt(r: tuple[str, ...]) -> str:
        return (f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  "
                f"{r[3]:>{widths[3]}}").rstrip()

    rule = "=" * (sum(widths) + 6)
    trainable = model.num_params()
    buffers = sum(layer.num_buffer_values() for layer in model.layers)
    lines = [fmt(header), rule, *[fmt(r) for r in rows], rule,
             f"Total params: {trainable + buffers:,}",
             f"Trainable params: {trainable:,}",
             f"Non-trainable params: {buffers:,}",
             f"Output: {model.output_kind} {[None, *shapes[-1]]}"]
    return "\n".join(lines)
