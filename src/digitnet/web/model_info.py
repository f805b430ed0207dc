"""What the web app tells about a model: ``GET /api/model``, and which layers are the hidden ones.

Both the draw-a-digit routes (:mod:`digitnet.web.server`) and the live-training tab
(:mod:`digitnet.web.training`, which swaps in the model it trains) describe models this way.
"""

from __future__ import annotations

from typing import Any

from digitnet import __version__
from digitnet.nn.activations import Activation
from digitnet.nn.registry import entry_of


def model_info(loaded) -> dict[str, Any]:
    """What ``GET /api/model`` returns: architecture, classes, parameter count, metrics."""
    model = loaded.model
    shapes = model.output_shapes()
    return {
        "name": loaded.path.name if loaded.path else "model",
        "digitnet_version": __version__,
        "dataset": loaded.metadata.get("dataset"),
        "classes": list(loaded.classes),
        "input_shape": list(model.input_shape),
        "num_params": int(model.num_params()),
        "layers": [{"index": i, "description": repr(layer), "type": layer.layer_type,
                    "output_shape": list(shape), "params": int(layer.num_params())}
                   for i, (layer, shape) in enumerate(zip(model.layers, shapes, strict=True))],
        "hidden_layers": [{"index": i, "name": name, "shape": list(shapes[i])} for i, name in hidden_layers(model)],
        "architecture": model.config(),
        "metrics": loaded.metadata.get("metrics", {}),
        "training": loaded.metadata.get("training", {}),
        "summary": model.summary(),
    }


def hidden_layers(model) -> list[tuple[int, str]]:
    """``(layer index, name)`` of the layers whose outputs are the hidden representations.

    The output of each hidden activation (any registered one usable in a hidden layer: ReLU, GELU,
    ...); for a model without any, each layer with parameters but the last.
    """
    layers = model.layers
    picked = [i for i, layer in enumerate(layers[:-1])
              if isinstance(layer, Activation) and "hidden" in entry_of(layer).tags]
    if not picked:
        with_params = [i for i, layer in enumerate(layers) if layer.params]
        picked = with_params[:-1]
    return [(i, f"Hidden layer {k + 1} · {layers[i].layer_type}") for k, i in enumerate(picked)]
