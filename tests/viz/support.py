"""Shared by the picture tests: one small real training run and one small CNN, made once per session.

The run is a 784-32-16-10 MLP trained for 2 epochs on 2,000 real MNIST images through
:func:`digitnet.runs.run_training` (the same code as ``digitnet train --out``), so it has the real
run-directory layout. The CNN (conv 4 -> pool -> dense) is trained 1 epoch on 1,000 images and saved
as a bare model file. Both take about a second.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
from PIL import Image

CNN_LAYERS = [
    {"type": "Conv2D", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1},
    {"type": "BatchNorm", "num_features": 4},
    {"type": "ReLU"},
    {"type": "MaxPool2D", "kernel_size": 2},
    {"type": "Flatten"},
    {"type": "Dense", "in_features": 4 * 14 * 14, "out_features": 16},
    {"type": "ReLU"},
    {"type": "Dense", "in_features": 16, "out_features": 10},
]


@functools.cache
def tiny_run(root: Path) -> Path:
    """Train the small MLP run into ``root/tiny`` (once per session) and return the run directory."""
    from digitnet.config import TrainConfig
    from digitnet.runs import run_training

    config = TrainConfig(arch="784-32-16-10", epochs=2, limit_train=2000, val_split=0.1, optimizer="adam",
                         lr=0.003, batch_size=64, seed=0)
    out = root / "tiny"
    run_training(config, out, quiet=True, log=lambda message: None)
    return out


_CNN_FILES: dict[Path, Path] = {}


def tiny_cnn(root: Path, mnist_train) -> Path:
    """Train the small CNN (once per session) and save it as ``root/cnn.safetensors``."""
    if root in _CNN_FILES:
        return _CNN_FILES[root]
    from digitnet.io import save_model
    from digitnet.nn import Sequential, make_loss, make_optimizer
    from digitnet.training import fit

    model = Sequential.from_config({"layers": CNN_LAYERS, "input_shape": [1, 28, 28]},
                                   rng=np.random.default_rng(0))
    fit(model, make_loss("cross_entropy"), make_optimizer("adam", 0.003), mnist_train.head(1000), epochs=1,
        batch_size=50, rng=np.random.default_rng(1))
    _CNN_FILES[root] = save_model(root / "cnn.safetensors", model, dataset="mnist")
    return _CNN_FILES[root]


def open_png(data_or_path) -> Image.Image:
    """Open PNG bytes or a PNG file, check it is a complete, valid PNG, and return it (loaded)."""
    raw = Path(data_or_path).read_bytes() if isinstance(data_or_path, str | Path) else data_or_path
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    Image.open(io.BytesIO(raw)).verify()  # checks the chunks and CRCs
    image = Image.open(io.BytesIO(raw))
    image.load()
    return image


def assert_drawn(image: Image.Image, min_colors: int = 8) -> None:
    """The picture is not blank: it has several colours and real dark content."""
    rgb = np.asarray(image.convert("RGB"))
    colors = len(np.unique(rgb.reshape(-1, 3), axis=0))
    assert colors >= min_colors, f"only {colors} colours: blank picture?"
    assert (rgb.min(axis=2) < 100).mean() > 0.002, "almost no dark pixels: no text or lines?"


def figure_texts(fig) -> list[str]:
    """Every text on a figure: titles, labels, tick labels, annotations, suptitle."""
    texts = [t.get_text() for t in fig.findobj(lambda artist: hasattr(artist, "get_text"))]
    return [t for t in texts if t]
