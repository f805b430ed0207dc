"""Test corpora of digit images made from real handwriting, and the measurement of a model on them.

Every corpus is built deterministically (seeded ``numpy.random.Generator``s) from the real MNIST
test digits, except the font corpus, which renders 0-9 in the TrueType fonts that come with
matplotlib. Each sample is an image *file* (PNG or JPEG bytes), exactly what ``digitnet predict``
reads.

Kinds:

- ``mnist``: the 28x28 test images themselves, saved as PNG (white on black).
- ``canvas``: a drawing on a 280x280 canvas: black on white, white on black, off-centre, small,
  thick, on a transparent background, JPEG.
- ``photo``: dark ink on gray paper with sensor noise, as JPEG: a shadow over a corner, the hard
  or soft edge of a shadow across the sheet, or the sheet on a dark table.
- ``font``: typed digits in 18 fonts (DejaVu, STIX, Computer Modern), dark on white.
- ``scan-*``: scanned digits as in the classic small-scan collections: cropped tight (the strokes
  touch two or more edges), dark ink on white, at their own low resolution (8x8, 16x16, 20x20) or
  enlarged again to 64x64 (bicubic: blurred; nearest: blocky), some as JPEG, some on faint gray
  paper, some with the thin line of a form's box at one edge.

Measure a model (the table of the HANDWRITING docs)::

    PYTHONPATH=src:. DIGITNET_DATA=/work/shared/data python -m tests.support.corpora runs/mlp-fast
"""

from __future__ import annotations

import argparse
import functools
import io
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tests.web.support import mnist_split, render, with_alpha

SEED = 16
SCAN_SIDE = 64


@dataclass(frozen=True)
class Sample:
    """One image file of a corpus: its kind, a file name, the encoded bytes and the true digit."""

    kind: str
    name: str
    data: bytes
    label: int


def encode(gray: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _rng(kind: str) -> np.random.Generator:
    return np.random.default_rng([SEED, zlib.crc32(kind.encode())])


def _picks(kind: str, count: int) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """A seeded generator for ``kind`` and ``count`` MNIST test digits drawn with it (no filtering)."""
    rng = _rng(kind)
    images, labels = mnist_split("test")
    chosen = np.sort(rng.choice(len(images), size=count, replace=False))
    return rng, images[chosen], labels[chosen]


# -- scans ------------------------------------------------------------------------------------------

def _resize(values: np.ndarray, size: tuple[int, int], resample) -> np.ndarray:
    """float [H, W] -> float [size[1], size[0]] with a Pillow filter (no clipping: bicubic overshoots)."""
    return np.asarray(Image.fromarray(values.astype(np.float32)).resize(size, resample), dtype=np.float32)


def tight(digit: np.ndarray) -> np.ndarray:
    """An MNIST digit cropped to its ink: float [h, w] in [0, 1], 1 = ink, touching all four sides."""
    rows = np.flatnonzero(digit.max(axis=1) > 0)
    cols = np.flatnonzero(digit.max(axis=0) > 0)
    return digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.float32) / 255.0


def fit(ink: np.ndarray, side: int, *, stretch: float = 1.0, resample=Image.Resampling.LANCZOS) -> np.ndarray:
    """Scale a tight crop into a ``side`` square: the longer side fills it, the shorter is scaled as
    much times ``stretch`` (at most to the full side), centred. The ink touches at least two edges."""
    height, width = ink.shape
    scale = side / max(height, width)
    new_h = min(side, max(1, round(height * scale * (stretch if height < width else 1))))
    new_w = min(side, max(1, round(width * scale * (stretch if width < height else 1))))
    small = _resize(ink, (new_w, new_h), resample)
    out = np.zeros((side, side), dtype=np.float32)
    top, left = (side - new_h) // 2, (side - new_w) // 2
    out[top:top + new_h, left:left + new_w] = small
    return out


def on_paper(ink: np.ndarray, *, paper: float = 255.0, ink_level: float = 0.0, noise: float = 0.0,
             rng: np.random.Generator | None = None) -> np.ndarray:
    """Ink [0, 1] -> uint8 dark ink on light paper (``paper - (paper - ink_level) * ink``, plus noise)."""
    gray = paper - (paper - ink_level) * np.clip(ink, 0, 1)
    if noise:
        gray = gray + rng.normal(0, noise, gray.shape)
    return np.clip(gray + 0.5, 0, 255).astype(np.uint8)


def small_scan(digit: np.ndarray, native: int, rng: np.random.Generator, *, enlarge=None,
               stretch: float = 1.0) -> np.ndarray:
    """A digit scanned at ``native x native`` (area-averaged or Lanczos), optionally enlarged to
    64x64 with ``enlarge`` (a Pillow filter); float ink [0, 1] (bicubic may overshoot a little)."""
    down = Image.Resampling.BOX if rng.random() < 0.5 else Image.Resampling.LANCZOS
    ink = np.clip(fit(tight(digit), native, stretch=stretch, resample=down), 0, 1)
    if enlarge is not None:
        ink = _resize(ink, (SCAN_SIDE, SCAN_SIDE), enlarge)
    return ink


def _scan_base(digit, rng, choice: str) -> np.ndarray:
    if choice == "64":
        return np.clip(fit(tight(digit), SCAN_SIDE, stretch=rng.uniform(1.0, 1.4)), 0, 1)
    native, how = choice.split("-")
    enlarge = Image.Resampling.BICUBIC if how == "bicubic" else Image.Resampling.NEAREST
    return small_scan(digit, int(native), rng, enlarge=enlarge)


def _ink_level(rng) -> float:
    return float(rng.uniform(0, 50))  # scanned ink is dark gray to black


def _frame_line(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add the thin line of a form's box outside one edge: a white gap of 1-4 px, then 1-3 px of line."""
    side = int(rng.integers(4))
    gap, width = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    level = float(rng.uniform(30, 120))
    turned = np.rot90(gray, side)
    paper = float(np.median(turned[0]))
    band = np.full((gap + width, turned.shape[1]), paper)
    band[:width] = level
    out = np.concatenate([band, turned.astype(np.float64)])
    return np.rot90(np.clip(out, 0, 255).astype(np.uint8), -side)


SCAN_RECIPES: dict[str, Callable] = {
    # tight crops enlarged to 64x64 (strokes blurred by the enlargement), some stretched sideways
    "scan-64": lambda d, rng: encode(on_paper(_scan_base(d, rng, "64"), ink_level=_ink_level(rng))),
    "scan-20": lambda d, rng: encode(on_paper(small_scan(d, 20, rng), ink_level=_ink_level(rng))),
    "scan-16": lambda d, rng: encode(on_paper(small_scan(d, 16, rng), ink_level=_ink_level(rng))),
    "scan-16-bicubic": lambda d, rng: encode(on_paper(_scan_base(d, rng, "16-bicubic"), ink_level=_ink_level(rng))),
    "scan-16-nearest": lambda d, rng: encode(on_paper(_scan_base(d, rng, "16-nearest"), ink_level=_ink_level(rng))),
    "scan-8": lambda d, rng: encode(on_paper(small_scan(d, 8, rng), ink_level=_ink_level(rng))),
    "scan-8-bicubic": lambda d, rng: encode(on_paper(_scan_base(d, rng, "8-bicubic"), ink_level=_ink_level(rng))),
    "scan-8-nearest": lambda d, rng: encode(on_paper(_scan_base(d, rng, "8-nearest"), ink_level=_ink_level(rng))),
    "scan-jpeg": lambda d, rng: encode(
        on_paper(_scan_base(d, rng, str(rng.choice(["64", "16-bicubic", "16-nearest", "8-bicubic"]))),
                 ink_level=_ink_level(rng)), "JPEG", quality=int(rng.integers(40, 86))),
    "scan-gray": lambda d, rng: encode(
        on_paper(_scan_base(d, rng, str(rng.choice(["64", "16-bicubic", "16-nearest", "8-bicubic"]))),
                 paper=rng.uniform(190, 230), ink_level=rng.uniform(30, 80), noise=rng.uniform(1, 4), rng=rng)),
    "scan-frame": lambda d, rng: encode(_frame_line(
        on_paper(_scan_base(d, rng, str(rng.choice(["64", "16-bicubic", "16-nearest"]))),
                 ink_level=_ink_level(rng)), rng)),
}
SCAN_KINDS = list(SCAN_RECIPES)


# -- canvas drawings, photos, fonts, MNIST itself -----------------------------------------------------

def _canvas(digit, rng) -> bytes:
    how = int(rng.integers(7))
    if how == 0:
        return encode(render(digit))
    if how == 1:
        return encode(render(digit, invert=False))
    if how == 2:
        offset = (int(rng.integers(-110, 111)), int(rng.integers(-110, 111)))
        return encode(render(digit, canvas=400, digit_size=120, offset=offset))
    if how == 3:
        return encode(render(digit, canvas=300, digit_size=int(rng.integers(30, 60))))
    if how == 4:
        return encode(render(digit, thicken=int(rng.integers(3, 8))))
    if how == 5:
        return encode(with_alpha(render(digit)))
    return encode(render(digit), "JPEG", quality=int(rng.integers(40, 86)))


def _photo(digit, rng) -> bytes:
    """Dark ink on gray paper with sensor noise, as JPEG: a shadow over a corner, a hard-edged or
    soft-edged shadow across the sheet, or the sheet on a dark table."""
    size = 500
    how = int(rng.integers(4))
    if how == 3:  # a sheet of paper on a dark table
        photo = np.full((size, size), rng.uniform(30, 70))
        top, left = int(rng.integers(15, 45)), int(rng.integers(15, 60))
        photo[top:size - top, left:size - left] = rng.uniform(190, 225)
        photo[100:400, 100:400] *= 1 - 0.75 * render(digit, canvas=300, digit_size=180, invert=False) / 255.0
        return encode(np.clip(photo + rng.normal(0, 5, photo.shape), 0, 255).astype(np.uint8), "JPEG",
                      quality=int(rng.integers(60, 91)))
    rows, cols = np.mgrid[0:size, 0:size] / size
    if rng.random() < 0.5:
        rows = rows[::-1]
    lit = rng.uniform(180, 220)
    if how == 0:  # a shadow darkening one corner
        paper = lit - rng.uniform(60, 100) * rows * cols
    else:  # the edge of a shadow (of a hand, a phone) across the sheet: hard, or soft
        edge = rng.uniform(0.25, 0.6) - cols - 0.3 * rows
        depth = rng.uniform(60, 90)
        paper = lit - depth * ((edge > 0) if how == 1 else 1 / (1 + np.exp(-edge / rng.uniform(0.02, 0.05))))
    ink = render(digit, canvas=size, digit_size=int(rng.integers(160, 260)), invert=False) / 255.0
    photo = np.clip((paper + rng.normal(0, 6, (size, size))) * (1 - 0.75 * ink), 0, 255).astype(np.uint8)
    return encode(photo, "JPEG", quality=int(rng.integers(60, 91)))


FONT_FILES = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
              "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
              "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf",
              "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf", "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf",
              "cmb10.ttf"]


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def font_corpus() -> list[Sample]:
    """Each digit 0-9 in each of the fonts, 60-110 px tall, dark on white in a 160x160 image."""
    rng = _rng("font")
    samples = []
    for file in FONT_FILES:
        for digit in range(10):
            size = int(rng.integers(60, 111))
            font = ImageFont.truetype(str(_font_dir() / file), size)
            image = Image.new("L", (160, 160), 255)
            draw = ImageDraw.Draw(image)
            left, top, right, bottom = draw.textbbox((0, 0), str(digit), font=font)
            x = (160 - (right - left)) // 2 - left + int(rng.integers(-10, 11))
            y = (160 - (bottom - top)) // 2 - top + int(rng.integers(-10, 11))
            draw.text((x, y), str(digit), fill=int(rng.integers(0, 60)), font=font)
            samples.append(Sample("font", f"font-{Path(file).stem}-{digit}.png", encode(np.asarray(image)), digit))
    return samples


def _from_mnist(kind: str, count: int, make: Callable) -> list[Sample]:
    rng, images, labels = _picks(kind, count)
    samples = []
    for k, (digit, label) in enumerate(zip(images, labels, strict=True)):
        data = make(digit, rng)
        suffix = "jpg" if data[:2] == b"\xff\xd8" else "png"
        samples.append(Sample(kind, f"{kind}-{k:03d}-{label}.{suffix}", data, int(label)))
    return samples


#: how many images each MNIST-made kind has
COUNTS = {"mnist": 300, "canvas": 210, "photo": 120, **{kind: 50 for kind in SCAN_KINDS}}
KINDS = ["mnist", "canvas", "photo", "font", *SCAN_KINDS]


@functools.cache
def corpus(kind: str) -> tuple[Sample, ...]:
    """The samples of one kind (built once per process)."""
    if kind == "font":
        return tuple(font_corpus())
    makers = {"mnist": lambda d, rng: encode(d), "canvas": _canvas, "photo": _photo, **SCAN_RECIPES}
    if kind not in makers:
        raise KeyError(f"unknown corpus kind {kind!r}; known: {', '.join(KINDS)}")
    return tuple(_from_mnist(kind, COUNTS[kind], makers[kind]))


def scan_corpus() -> list[Sample]:
    """Every scan kind: 550 images."""
    return [sample for kind in SCAN_KINDS for sample in corpus(kind)]


# -- measuring ---------------------------------------------------------------------------------------

@dataclass
class Score:
    kind: str
    images: int = 0
    no_ink: int = 0
    other_errors: int = 0
    correct: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.images if self.images else 0.0


def read_samples(samples, preprocess_file: Callable | None = None):
    """Preprocess each sample's file like ``digitnet predict``: ``(images [n, 28, 28], labels, failures)``
    where ``failures`` lists ``(sample, message)`` for the files that raised ImageError."""
    from digitnet.data.images import load_digit
    from digitnet.errors import ImageError

    preprocess_file = preprocess_file or load_digit
    images, labels, failures = [], [], []
    for sample in samples:
        try:
            images.append(preprocess_file(sample.data))
            labels.append(sample.label)
        except ImageError as exc:
            failures.append((sample, str(exc)))
    stacked = np.stack(images) if images else np.zeros((0, 28, 28), np.uint8)
    return stacked, np.asarray(labels, dtype=np.int64), failures


def score(model, samples, kind: str) -> Score:
    """How a model (a Sequential or LoadedModel) reads ``samples``: a failed file counts as wrong."""
    from digitnet.handwriting import classify

    images, labels, failures = read_samples(samples)
    result = Score(kind, images=len(samples))
    result.no_ink = sum("no ink" in message for _, message in failures)
    result.other_errors = len(failures) - result.no_ink
    if len(images):
        result.correct = int((classify(model, images).argmax(axis=1) == labels).sum())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.corpora", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model file or run directory")
    parser.add_argument("--kinds", nargs="*", default=KINDS, help="which corpora (default: all)")
    parser.add_argument("--save", metavar="DIR", help="also write every image file there (to look at them)")
    args = parser.parse_args(argv)

    from digitnet.handwriting import classify
    from digitnet.io import load_model

    loaded = load_model(args.model)
    images, labels = mnist_split("test")
    raw = float((classify(loaded, images).argmax(axis=1) == labels).mean())
    print(f"model {args.model}: plain MNIST test set as 28x28 arrays, no preprocessing: {raw:.2%} of 10,000")
    print("| kind | images | no ink found | other errors | accuracy |")
    print("| --- | ---: | ---: | ---: | ---: |")
    totals = Score("scan (all)")
    for kind in args.kinds:
        samples = corpus(kind)
        if args.save:
            folder = Path(args.save) / kind
            folder.mkdir(parents=True, exist_ok=True)
            for sample in samples:
                (folder / sample.name).write_bytes(sample.data)
        result = score(loaded, samples, kind)
        print(f"| {kind} | {result.images} | {result.no_ink} | {result.other_errors} | {result.accuracy:.1%} |")
        if kind.startswith("scan"):
            for name in ("images", "no_ink", "other_errors", "correct"):
                setattr(totals, name, getattr(totals, name) + getattr(result, name))
    if totals.images:
        print(f"| **{totals.kind}** | {totals.images} | {totals.no_ink} | {totals.other_errors} | "
              f"{totals.accuracy:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
