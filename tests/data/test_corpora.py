"""Every kind of image in the test corpora (tests/support/corpora.py) is read, with accuracy floors.

The corpora are made from real handwriting (MNIST test digits, never seen in training): small
scans cropped tight so that the ink touches the edges, at 8x8 to 20x20 or enlarged to 64x64
(blurred or blocky), as JPEG, on gray paper or with the line of a form's box; drawings on a
canvas; photos with shadows or on a table; typed digits in 18 fonts. The model is the small test
MLP (784-64-10, about 95% on the MNIST test set).

With the border-based ink finder these scans were 63.5% right and 53 of 550 were "no ink found";
the floors below leave a few points for numerical noise under the measured figures (scans
95.5%, every scan kind 88% or more, canvas 94.3%, photo 93.3%, font 88.3%, MNIST 95.7%).
"""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.handwriting import classify
from tests.support.corpora import KINDS, SCAN_KINDS, corpus, read_samples
from tests.web.support import trained_model

FLOORS = {"mnist": 0.93, "canvas": 0.92, "photo": 0.90, "font": 0.85, **{kind: 0.84 for kind in SCAN_KINDS}}
#: all the scans together
SCAN_FLOOR = 0.92


@pytest.fixture(scope="module")
def model(mnist_path):
    model, accuracy = trained_model()
    assert accuracy > 0.93
    return model


@pytest.fixture(scope="module")
def results(model):
    """kind -> (28x28 images, true labels, predicted labels, failures [(sample, message)])."""
    out = {}
    for kind in KINDS:
        images, labels, failures = read_samples(corpus(kind))
        predicted = classify(model, images).argmax(axis=1) if len(images) else np.zeros(0, np.int64)
        out[kind] = images, labels, predicted, failures
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_every_image_is_read(results, kind):
    """No image with a visible digit ends in "no ink found" (or any other error)."""
    _, _, _, failures = results[kind]
    assert not failures, "\n".join(f"{sample.name}: {message}" for sample, message in failures)


@pytest.mark.parametrize("kind", KINDS)
def test_accuracy_floor(results, kind):
    _, labels, predicted, failures = results[kind]
    accuracy = float((predicted == labels).sum()) / (len(labels) + len(failures))
    assert accuracy >= FLOORS[kind], f"{kind}: {accuracy:.1%} < {FLOORS[kind]:.0%}"


def test_scans_together(results):
    right = sum(int((results[kind][2] == results[kind][1]).sum()) for kind in SCAN_KINDS)
    total = sum(len(corpus(kind)) for kind in SCAN_KINDS)
    assert total >= 500 and right / total >= SCAN_FLOOR, f"scans: {right / total:.1%}"


def _isolated_faint_peaks(image: np.ndarray) -> int:
    """Pixels of 16-63 that are at least as bright as all 8 neighbours: faint ink standing on its
    own, away from any stroke (a stroke's edge always has a brighter neighbour)."""
    padded = np.pad(image.astype(np.int16), 1)
    centre = padded[1:-1, 1:-1]
    neighbours = np.stack([padded[1 + dr:padded.shape[0] - 1 + dr, 1 + dc:padded.shape[1] - 1 + dc]
                           for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc])
    return int(((centre >= 16) & (centre < 64) & (centre >= neighbours.max(axis=0))).sum())


@pytest.mark.parametrize("kind", ["scan-8", "scan-8-nearest", "scan-8-bicubic", "scan-16", "scan-20"])
def test_small_scans_get_no_halo(results, kind):
    """Enlarging a small scan 2.5-10 times must not invent ink: no ripples of an interpolation
    filter (Lanczos left them in 3 of these 250 images) stand apart from the strokes."""
    images = results[kind][0]
    peaks = [_isolated_faint_peaks(image) for image in images]
    assert sum(peaks) == 0, f"{sum(p > 0 for p in peaks)} images with faint isolated ink"
