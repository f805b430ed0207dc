"""Shared by the handwriting tests (images, handwriting, web): real MNIST digits and a small model.

The model is a 784-64-10 MLP trained for 5 epochs on 20,000 real MNIST training images
(about 95% test accuracy; about a second). It is trained once per test session and cached
here because three test modules use it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import mnist_dir, require_module


@functools.cache
def mnist_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Real MNIST ``(images uint8 [N,28,28], labels uint8 [N])`` of ``split`` ("train"/"test")."""
    try:
        from digitnet.data.datasets import load_dataset
    except ImportError:  # the dataset registry is newer than these tests: read the IDX files
        from digitnet.data.idx import read_idx

        folder = mnist_dir()
        prefix = "train" if split == "train" else "t10k"
        images = read_idx(next(folder.glob(f"{prefix}-images-idx3-ubyte*")))
        labels = read_idx(next(folder.glob(f"{prefix}-labels-idx1-ubyte*")))
        return images, labels
    data = load_dataset("mnist", split=split)
    return data.images, data.labels


def _one_blas_thread():
    """Small matrix products are fastest on one BLAS thread; several threads on a busy 2-core machine
    made this training 15x slower (57 s instead of 3.5 s)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


@functools.cache
def trained_model():
    """``(model, test accuracy on 2,000 test images)`` of the small test MLP, trained once."""
    from digitnet.data.batches import images_to_inputs
    from digitnet.nn.losses import SoftmaxCrossEntropy
    from digitnet.nn.optim import SGD
    from digitnet.nn.sequential import Sequential
    from digitnet.training import fit

    images, labels = mnist_split("train")
    model = Sequential.from_spec("784-64-10", rng=np.random.default_rng(1))
    with _one_blas_thread():
        fit(model, SoftmaxCrossEntropy(), SGD(lr=0.02, momentum=0.9), (images[:20000], labels[:20000]),
            epochs=5, batch_size=32, rng=np.random.default_rng(0), record_grad_norms=False)
    test_images, test_labels = mnist_split("test")
    predicted = model.predict(images_to_inputs(test_images[:2000], (784,)))
    return model, float((predicted == test_labels[:2000]).mean())


def trained_model_file(folder: str | Path) -> Path:
    """Save the small test MLP as ``folder/model.safetensors`` (trained on first use)."""
    from digitnet.io import save_model

    model, accuracy = trained_model()
    path = Path(folder) / "model.safetensors"
    if not path.exists():
        save_model(path, model, metrics={"test_accuracy": accuracy}, dataset="mnist",
                   training={"epochs": 5, "optimizer": "sgd", "lr": 0.02, "train_images": 20000})
    return path


def render(digit: np.ndarray, *, canvas: int = 280, digit_size: int = 200, offset: tuple[int, int] = (0, 0),
           thicken: int = 0, invert: bool = True) -> np.ndarray:
    """Render an MNIST digit (uint8 [28, 28], white on black) big, as a user might draw it.

    Scales the 20-pixel digit to ``digit_size`` (Lanczos), optionally thickens strokes by a max
    filter of radius ``thicken``, places it in a ``canvas`` square shifted by ``offset = (rows, cols)``
    from the centre, and with ``invert`` makes it black ink on white paper. Returns uint8 [canvas, canvas].
    """
    scale = digit_size / 20.0
    big = Image.fromarray(digit).resize((round(28 * scale), round(28 * scale)), Image.Resampling.LANCZOS)
    ink = np.asarray(big, dtype=np.uint8)
    if thicken:  # a max filter of radius `thicken` (a square pen)
        padded = np.pad(ink, thicken)
        size = ink.shape[0] + 2 * thicken
        grown = np.zeros((size, size), dtype=np.uint8)
        for dr in range(2 * thicken + 1):
            for dc in range(2 * thicken + 1):
                np.maximum(grown[dr:dr + ink.shape[0], dc:dc + ink.shape[1]], ink,
                           out=grown[dr:dr + ink.shape[0], dc:dc + ink.shape[1]])
        ink = grown
        del padded
    out = np.zeros((canvas, canvas), dtype=np.uint8)
    top = (canvas - ink.shape[0]) // 2 + offset[0]
    left = (canvas - ink.shape[1]) // 2 + offset[1]
    rows = slice(max(top, 0), min(top + ink.shape[0], canvas))
    cols = slice(max(left, 0), min(left + ink.shape[1], canvas))
    out[rows, cols] = ink[rows.start - top:rows.stop - top, cols.start - left:cols.stop - left]
    return 255 - out if invert else out


def encode(gray: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    """uint8 [H, W] (or [H, W, 4]) -> image file bytes."""
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def with_alpha(gray_on_white: np.ndarray) -> np.ndarray:
    """Dark ink on white -> RGBA [H, W, 4]: black ink whose opacity is the ink, transparent paper."""
    ink = 255 - gray_on_white
    rgba = np.zeros((*gray_on_white.shape, 4), dtype=np.uint8)
    rgba[..., 3] = ink
    return rgba


def row_of_digits(digits: list[np.ndarray], gap: int = 40, size: int = 120) -> np.ndarray:
    """Several MNIST digits side by side, dark on white, each ``size`` tall: uint8 [H, W]."""
    tiles = [render(d, canvas=size + 20, digit_size=size * 20 / 28 * 1.2, invert=False) for d in digits]
    tiles = [t[:, np.flatnonzero(t.max(axis=0) > 0)[0]:np.flatnonzero(t.max(axis=0) > 0)[-1] + 1]
             for t in tiles]
    height = tiles[0].shape[0]
    parts = [np.zeros((height, gap), dtype=np.uint8)]
    for tile in tiles:
        parts += [tile, np.zeros((height, gap), dtype=np.uint8)]
    return 255 - np.concatenate(parts, axis=1)


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on 127.0.0.1 and a free port; yields its base URL."""
    import pytest

    uvicorn = require_module("uvicorn")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                pytest.fail("the uvicorn test server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()
