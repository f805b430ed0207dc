"""Your own handwriting: any image of a digit -> an MNIST-style 28x28 digit.

A network trained on MNIST has only ever seen one kind of picture: a white digit on a black
background, its longer side scaled to 20 pixels, placed in a 28x28 field so that its centre of
mass sits at the centre. A photo of a digit on paper or a drawing on a canvas looks nothing like
that, so it is brought into the same form, step by step (the MNIST procedure):

1. **Decode** (Pillow: PNG, JPEG, BMP, GIF, WebP), apply the EXIF rotation of phone photos,
   composite any transparency on white, convert to grayscale ``g`` (uint8 ``[H, W]``). An image
   enlarged by repeating pixels (a blocky 8x8 or 16x16 scan) is taken back to its own pixels.
2. **Polarity**: Otsu's threshold over the whole image splits it in two; the paper is the side
   where the median of the border pixels lies (a digit that touches the edges covers only part of
   them). On light paper the image is inverted, ``ink = 255 - g``, so that ink is bright, as in
   MNIST. If most of the image differs strongly from its border, it is a sheet of paper on a
   table when the border is all table, and the paper is then the image's median.
3. **Paper**: the paper's level is the most common level on its side of the threshold (a median
   would be pulled towards the ink by blurred strokes or by ink that fills the frame), and is
   subtracted. If the paper's level differs between the 8x8 cells that are plain paper (far from
   strong ink and from lines along the edge, and uniform), it is uneven (a shadow): the level of
   every cell (a low percentile; cells inside thick strokes take their neighbours') is
   interpolated and subtracted.
4. **Threshold** (Otsu): the level ``t`` that maximises the between-class variance
   ``w0(t) w1(t) (mu0(t) - mu1(t))^2`` of the histogram, raised to at least 4 standard deviations
   of the paper's noise (measured on the side of the paper away from the ink). ``ink > t`` is the
   ink mask.
5. **Specks and lines**: the mask's 8-connected components (a run-length labelling written in
   NumPy) smaller than 5% of the largest are dropped, and so are straight lines along an edge (the
   box of a form); in a photo with a shadow or a table, pieces touching the image edge are dropped
   when a real digit remains.
6. **Crop** to the bounding box of the ink; **normalise the stroke width** (estimated as
   ``2 * area / perimeter``) to MNIST's by a grayscale dilation or erosion at 4x the final scale.
7. **Scale** the longer side to 20 pixels keeping the aspect ratio (bicubic, anti-aliased).
8. **Centre**: paste into 28x28 so that the centre of mass ``(sum_i i*x_i / sum_i x_i)`` lands on
   pixel ``(14, 14)``, where it is in MNIST (measured: 13.99, 14.01 on the test set).

Everything returns uint8 ``[28, 28]``, 0 = background, 255 = ink. Bad input (not an image, too
large, no ink) raises :class:`~digitnet.errors.ImageError` with a message that says why.
"""

from __future__ import annotations

import glob
import io
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from digitnet.errors import ImageError

#: files larger than this are refused before they are read (a phone photo is 2-10 MB)
MAX_FILE_BYTES = 25 * 1024 * 1024
#: images with more pixels than this are refused before they are decoded (decompression bombs)
MAX_PIXELS = 40_000_000
#: decoders we accept; anything else is refused without trying other Pillow plugins
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
#: larger images are reduced to this longer side before the ink is searched (speed; the digit
#: ends up 20 pixels tall anyway)
WORK_MAX_SIDE = 800

SIZE = 28  # output field
BOX = 20  # the digit's longer side inside it
CENTRE = 14.0  # where MNIST's centres of mass are (row, column)
#: MNIST's typical stroke width in the 28x28 field, by the 2*area/perimeter estimate below
TARGET_STROKE = 2.0
#: a difference of ink and background below this many gray levels is "no ink"
MIN_CONTRAST = 40.0
#: components smaller than this fraction of the largest are specks
SPECK_FRACTION = 0.05
#: the image's bulk and its border differ by more than this many gray levels: a sheet of paper on a
#: table, or ink that covers most of a tightly cropped frame
FRAME_GAP = 64.0
#: paper whose level varies by more than this many gray levels (a shadow) is flattened cell by cell
UNEVEN = 24.0
#: a blocky image (enlarged by repeating pixels) is read at its own size if that is in this range
MIN_NATIVE, MAX_NATIVE = 6, 64
#: neighbouring columns (rows) whose pixels differ by at most this many gray levels are equal
NATIVE_TOLERANCE = 2


# -- decoding -------------------------------------------------------------------------------------

def load_image(
    source: str | os.PathLike | bytes | bytearray | memoryview | Image.Image,
    *,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_FILE_BYTES,
    max_side: int | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Decode an image file (or its bytes) to grayscale uint8 ``[H, W]`` (0 = black, 255 = white).

    Transparency is composited on white; the EXIF orientation of photos is applied; for an animated
    GIF the first frame is used. ``max_side`` lets JPEG decode at a reduced scale and reduces any
    image whose longer side is larger (speed for big photos).

    Raises:
        ImageError: missing file, larger than ``max_bytes`` or ``max_pixels``, not a PNG, JPEG,
            BMP, GIF or WebP image, or a corrupt one.
    """
    if isinstance(source, Image.Image):
        return _reduce(_pil_to_gray(source), max_side)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = name or "the image data"
        if len(data) > max_bytes:
            raise ImageError(f"{label} is {len(data):,} bytes; the limit is {max_bytes:,}")
    else:
        path = Path(source)
        label = name or str(path)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ImageError(f"image file not found: {path}") from None
        except OSError as exc:
            raise ImageError(f"cannot read {path}: {exc.strerror}") from None
        if path.is_dir():
            raise ImageError(f"{path} is a directory, not an image file")
        if size > max_bytes:
            raise ImageError(f"{path} is {size:,} bytes; the limit for an image is {max_bytes:,}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"cannot read {path}: {exc.strerror}") from None
    if not data:
        raise ImageError(f"{label} is empty (0 bytes)")
    with warnings.catch_warnings():
        # Pillow warns (not raises) between MAX_IMAGE_PIXELS and twice that; we want a clean error
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = image.size
            if width < 1 or height < 1:
                raise ImageError(f"{label} has no pixels ({width}x{height})")
            if width * height > max_pixels:
                raise ImageError(f"{label} is {width}x{height} = {width * height:,} pixels; "
                                 f"the limit is {max_pixels:,}")
            if max_side and image.format == "JPEG" and max(width, height) > max_side:
                scale = max_side / max(width, height)
                image.draft("L", (max(1, round(width * scale)), max(1, round(height * scale))))
            image.load()
            image = ImageOps.exif_transpose(image) or image
            gray = _pil_to_gray(image)
        except UnidentifiedImageError:
            raise ImageError(f"{label} is not a PNG, JPEG, BMP, GIF or WebP image") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(f"{label} is too large to decode safely (decompression bomb?)") from None
        except (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error) as exc:
            raise ImageError(f"{label} is a corrupt or truncated image ({exc})") from None
    return _reduce(gray, max_side)


def _pil_to_gray(image: Image.Image) -> np.ndarray:
    """A Pillow image -> uint8 ``[H, W]``; alpha composited on white, 16-bit scaled to 8."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max(initial=0) > 255 else 255.0
        return np.clip(values * (255.0 / top), 0, 255).round().astype(np.uint8)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def _reduce(gray: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink so the longer side is at most ``max_side`` (box filter: the mean of each cell)."""
    height, width = gray.shape
    if not max_side or max(height, width) <= max_side:
        return gray
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.BOX), dtype=np.uint8)


def as_gray(image) -> np.ndarray:
    """Anything image-like -> grayscale uint8 ``[H, W]`` of at most WORK_MAX_SIDE per side.

    Accepts a path or bytes (decoded with :func:`load_image`), a Pillow image, or an array:
    ``[H, W]`` (uint8 0-255, bool, or float in [0, 1] or [0, 255]) or ``[H, W, 3|4]`` RGB(A).
    """
    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image)):
        return load_image(image, max_side=WORK_MAX_SIDE)
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        if array.dtype != np.uint8:
            array = _to_uint8(array)
        return _reduce(_pil_to_gray(Image.fromarray(array)),
                       WORK_MAX_SIDE)
    if array.ndim != 2:
        raise ImageError(f"expected a grayscale image [H, W] or RGB(A) [H, W, 3|4], got shape "
                         f"{list(array.shape)}")
    if array.size == 0:
        raise ImageError("the image has no pixels")
    return _reduce(_to_uint8(array), WORK_MAX_SIDE)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    values = array.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ImageError("the image holds NaN or infinite values")
    if np.issubdtype(array.dtype, np.floating) and values.max(initial=0) <= 1.0:
        values = values * 255.0  # floats in [0, 1]
    return np.clip(values, 0, 255).round().astype(np.uint8)


# -- connected components ---------------------------------------------------------------------------

def label_components(mask: np.ndarray, with_stats: bool = False) -> tuple:
    """8-connected components of a boolean mask ``[H, W]``.

    Works on runs (horizontal stretches of ink): a run in row ``r`` touches a run in row ``r-1``
    when their column ranges overlap or meet diagonally. Runs are joined by repeated
    "hook each edge's larger root to its smaller one, then pointer-jump to roots" until every edge
    has one root (vectorised union-find, a handful of rounds).

    Returns:
        labels int32 ``[H, W]`` (0 = background, 1..n in order of the first pixel, row-major) and n;
        with ``with_stats`` also each component's area (pixels, int ``[n]``) and box (top, bottom,
        left, right inclusive, int ``[n, 4]``), computed from the runs.
    """
    height, width = mask.shape
    padded = np.zeros((height, width + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    steps = np.diff(padded, axis=1)  # [H, W+1]: +1 where a run starts, -1 one past its end
    run_rows, run_starts = np.nonzero(steps == 1)
    _, run_stops = np.nonzero(steps == -1)  # row-major order pairs them with the starts
    labels = np.zeros((height, width), dtype=np.int32)
    n_runs = len(run_rows)
    if n_runs == 0:
        return (labels, 0, np.zeros(0, np.int64), np.zeros((0, 4), np.int64)) if with_stats else (labels, 0)
    stride = width + 2  # keys row*stride + column sort runs row-major
    stop_keys = run_rows * stride + run_stops
    start_keys = run_rows * stride + run_starts
    above = (run_rows - 1) * stride
    # runs of the row above with stop >= my start and start <= my stop (8-connectivity)
    first = np.searchsorted(stop_keys, above + run_starts, side="left")
    last = np.searchsorted(start_keys, above + run_stops, side="right")
    counts = np.maximum(last - first, 0)
    lower = np.repeat(np.arange(n_runs), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    upper = np.repeat(first, counts) + offsets
    root = np.arange(n_runs)
    while len(lower):
        root_a, root_b = root[lower], root[upper]
        differ = root_a != root_b
        if not differ.any():
            break
        small, large = np.minimum(root_a, root_b)[differ], np.maximum(root_a, root_b)[differ]
        np.minimum.at(root, large, small)
        while True:  # pointer jumping: every entry points straight at its root
            jumped = root[root]
            if np.array_equal(jumped, root):
                break
            root = jumped
    _, run_label = np.unique(root, return_inverse=True)
    run_label = run_label.astype(np.int32) + 1
    lengths = run_stops - run_starts
    pixel_rows = np.repeat(run_rows, lengths)
    pixel_cols = np.repeat(run_starts, lengths) + (np.arange(lengths.sum())
                                                   - np.repeat(np.cumsum(lengths) - lengths, lengths))
    labels[pixel_rows, pixel_cols] = np.repeat(run_label, lengths)
    count = int(run_label.max())
    if not with_stats:
        return labels, count
    which = run_label - 1
    areas = np.bincount(which, weights=lengths, minlength=count).astype(np.int64)
    boxes = np.empty((count, 4), dtype=np.int64)
    boxes[:, 0], boxes[:, 2] = height, width
    boxes[:, 1] = boxes[:, 3] = -1
    np.minimum.at(boxes[:, 0], which, run_rows)
    np.maximum.at(boxes[:, 1], which, run_rows)
    np.minimum.at(boxes[:, 2], which, run_starts)
    np.maximum.at(boxes[:, 3], which, run_stops - 1)
    return labels, count, areas, boxes


@dataclass
class Ink:
    """Where the ink of an image is.

    Attributes:
        ink: float32 ``[H, W]`` in [0, 1]: 1 = full ink, 0 = background (specks removed).
        labels: int32 ``[H, W]``: component of each ink pixel (0 = none), specks removed.
        boxes: int ``[n, 4]``: top, bottom, left, right (inclusive) of each kept component;
            row ``k`` belongs to label ``ids[k]``.
        areas: int ``[n]``: pixels of each kept component.
        ids: int ``[n]``: the label values of the kept components.
    """

    ink: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    ids: np.ndarray


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of values in [0, 255]: the ``t`` maximising ``w0 w1 (mu0 - mu1)^2``.

    ``w0, w1`` are the fractions of values ``<= t`` and ``> t``, ``mu0, mu1`` their means.
    """
    hist = np.bincount(np.clip(values, 0, 255).astype(np.uint8).ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    weight0 = np.cumsum(hist)
    weight1 = weight0[-1] - weight0
    mass0 = np.cumsum(hist * levels)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean0 = mass0 / weight0
        mean1 = (mass0[-1] - mass0) / weight1
        between = weight0 * weight1 * (mean0 - mean1) ** 2
    between = np.nan_to_num(between, nan=-1.0)
    return float(np.argmax(between))


def native_resolution(gray: np.ndarray) -> np.ndarray:
    """An image enlarged by repeating pixels (nearest neighbour: a blocky small scan) -> its own pixels.

    A column of an enlarged image equals its neighbour except where one original column ends and
    the next begins. The smallest grid of ``n`` columns (``MIN_NATIVE <= n <= MAX_NATIVE``, blocks
    of two pixels or more) such that no column differs from its neighbour inside a block, and that
    the content changes at most of the block boundaries it spans, is the original size; the same
    for the rows. Both found: each block becomes one pixel again (its mean). Anything else (photos,
    drawings, smooth enlargements) is returned unchanged.
    """
    height, width = gray.shape
    if min(height, width) < 2 * MIN_NATIVE:
        return gray
    rows = _native_count(gray.T)
    cols = _native_count(gray) if rows else None
    if not rows or not cols:
        return gray
    return np.asarray(Image.fromarray(gray).resize((cols, rows), Image.Resampling.BOX), dtype=np.uint8)


def _native_count(gray: np.ndarray) -> int | None:
    """How many columns ``gray`` had before a nearest-neighbour enlargement, or None (see above).

    A new block may start within half a pixel of ``i * width / n`` (programs round the ties
    differently): anywhere else, neighbouring columns must be equal.
    """
    width = gray.shape[1]
    change = np.abs(np.diff(gray.astype(np.int16), axis=1)).max(axis=0) > NATIVE_TOLERANCE  # c vs c + 1
    moving = np.flatnonzero(change)
    if not 4 <= len(moving) <= width // 2:  # blocks of two pixels or more change at most every other column
        return None
    starts = np.arange(1, width, dtype=np.float64)  # where a block starts if columns c and c + 1 differ
    for count in range(MIN_NATIVE, min(MAX_NATIVE, width // 2) + 1):
        position = starts * count / width  # in the original's pixels
        boundary = np.round(position).astype(np.int64)
        allowed = np.abs(position - boundary) * width / count <= 0.5 + 1e-9
        if np.any(change & ~allowed):
            continue
        # most of the boundaries between the first and the last change are changes
        spanned = np.unique(boundary[allowed & (starts > moving[0]) & (starts <= moving[-1] + 1)])
        changed = np.unique(boundary[allowed & change])
        if len(changed) >= 0.5 * len(spanned):
            return count
    return None


def find_ink(image, *, invert: bool | None = None) -> Ink:
    """Steps 1-5 of the module docstring: the cleaned ink map of an image.

    Args:
        image: anything :func:`as_gray` accepts.
        invert: True for dark ink on a light background, False for light ink on dark;
            None decides from the image.

    Raises:
        ImageError: no ink (a blank or almost uniform image).
    """
    gray = native_resolution(as_gray(image)).astype(np.float32)
    height, width = gray.shape
    ink, mask, framed, uneven = _flatten(gray, invert)
    np.clip(ink, 0, 255, out=ink)
    if not mask.any() or float(ink[mask].mean()) - float(ink[~mask].mean() if (~mask).any() else 0) \
            < MIN_CONTRAST:
        raise ImageError("no ink found: the image is blank or has too little contrast")

    labels, count, areas, boxes = label_components(mask, with_stats=True)
    ids = np.arange(1, count + 1)
    # straight lines along an edge (the box of a form, a ruler) are not the digit
    rules = _rules(boxes, areas, height, width)
    if rules.all():
        rules[:] = False
    keep = ~rules & (areas >= max(2 if min(height, width) >= 32 else 1,
                                  SPECK_FRACTION * areas[~rules].max()))
    if uneven or framed:
        touching = ((boxes[:, 0] == 0) | (boxes[:, 1] == height - 1)
                    | (boxes[:, 2] == 0) | (boxes[:, 3] == width - 1))
        inner = keep & ~touching
        if inner.any():
            keep = inner & (areas >= SPECK_FRACTION * areas[inner].max())
    if not keep.any():
        raise ImageError("no ink found: only isolated specks")
    ids, areas, boxes = ids[keep], areas[keep], boxes[keep]
    kept = np.zeros(count + 1, dtype=bool)
    kept[ids] = True
    # only the box around the kept ink (plus a pixel) needs any more work
    rows = slice(max(int(boxes[:, 0].min()) - 1, 0), int(boxes[:, 1].max()) + 2)
    cols = slice(max(int(boxes[:, 2].min()) - 1, 0), int(boxes[:, 3].max()) + 2)
    region = labels[rows, cols]
    region = np.where(kept[region], region, 0).astype(np.int32)
    labels = np.zeros_like(labels)
    labels[rows, cols] = region

    # full ink = the 90th percentile of the ink pixels; keep a 1-pixel anti-aliased fringe
    full = float(np.percentile(ink[rows, cols][region > 0], 90))
    level = np.zeros(ink.shape, dtype=np.float32)
    level[rows, cols] = np.clip(ink[rows, cols] / max(full, 1.0), 0, 1) * _dilate(region > 0)
    return Ink(ink=level, labels=labels, boxes=boxes, areas=areas, ids=ids)


def _flatten(gray: np.ndarray, invert: bool | None) -> tuple[np.ndarray, np.ndarray, bool, bool]:
    """Steps 2-4: ``(ink, mask, framed, uneven)``: ink bright on paper at 0 (float ``[H, W]``),
    the thresholded ink, whether the image is a sheet on a table, and whether it had a shadow."""
    height, width = gray.shape
    ring = max(1, min(height, width) // 50)
    border = _ring(gray, ring)
    border_level = float(np.median(border))
    overall_level = float(np.median(_sample(gray)))
    framed = False
    if abs(overall_level - border_level) > FRAME_GAP:
        # Most of the image differs from its border: a sheet of paper on a table (the border is
        # table, the bulk is paper), or a digit whose ink covers most of a tightly cropped frame
        # (the border is paper, the bulk is ink). The table surrounds the sheet, while ink reaches
        # the border where strokes touch it. A light sheet may touch the border a little.
        middle = (overall_level + border_level) / 2
        bulk_on_border = float(np.mean((border > middle) == (overall_level > middle)))
        framed = bulk_on_border < (0.25 if overall_level > border_level else 0.03)
    if invert is None:
        # the paper is on the side of Otsu's threshold (over the whole image) where the border
        # (or, framed, the bulk of the image) is
        invert = (overall_level if framed else border_level) > otsu_threshold(_sample(gray))
    ink = 255.0 - gray if invert else gray.astype(np.float32, copy=True)
    ink -= _paper_level(ink)
    mask = _ink_mask(ink)

    # Uneven paper (a shadow): the paper's level differs between cells of the image that are
    # plain paper. Cells with strong ink (65% as dark as the darkest, or more) or a line along
    # the edge (a form's box), their neighbours, which may hold the blurred edges of strokes, and
    # cells whose pixels differ by more than the paper's noise (fainter or blurred strokes) do
    # not count: in a digit cropped tightly there is little else, and the paper is taken as even.
    uneven = False
    if not framed and min(height, width) >= 32:
        darkest = float(np.percentile(_sample(ink), 99.9))
        grid, spread = _paper_grid(ink)
        plain = (spread <= max(12.0, 4 * _noise(ink))) & (grid < 0.65 * darkest)
        if plain.sum() >= 8 and np.ptp(grid[plain]) > UNEVEN:  # else no subset of them differs either
            strong, _, areas, _ = label_components(ink >= 0.65 * darkest, with_stats=True)
            big = np.concatenate([[False], areas >= max(4.0, 0.0005 * height * width)])  # not noise
            labels, _, areas, boxes = label_components(mask, with_stats=True)
            rules = np.concatenate([[False], _rules(boxes, areas, height, width)])
            plain &= ~(_dilate(_cells(big[strong] | rules[labels], grid.shape[0]).any(axis=2)) > 0)
            uneven = plain.sum() >= 8 and np.subtract(*np.percentile(grid[plain], [90, 10])) > UNEVEN
        if uneven:
            ink -= _background(grid, darkest, (height, width))
            ink -= _paper_level(ink)
            mask = _ink_mask(ink)
    return ink, mask, framed, uneven


def _sample(values: np.ndarray) -> np.ndarray:
    """Every k-th row and column, about 65,000 pixels at most: plenty for a histogram or percentile."""
    step = max(1, round((values.size / 65536) ** 0.5))
    return values[::step, ::step]


def _ring(values: np.ndarray, ring: int) -> np.ndarray:
    """The pixels within ``ring`` of the image's edge, as one vector."""
    return np.concatenate([values[:ring].ravel(), values[-ring:].ravel(),
                           values[:, :ring].ravel(), values[:, -ring:].ravel()])


def _paper_level(ink: np.ndarray) -> float:
    """The paper's level in ``ink`` (ink bright): the most common level below Otsu's threshold.

    The most common level, not the median: blurred strokes and ink that covers a good part of
    the image or of its border pull a median towards the ink, not the peak of the paper.
    """
    sample = _sample(ink).ravel()
    threshold = otsu_threshold(sample)
    paper = sample[sample <= threshold]
    if not paper.size:
        return float(np.median(sample))
    offset = 256  # values may be negative; 1-level bins, smoothed over 5 levels
    counts = np.bincount(np.clip(np.round(paper).astype(np.int64) + offset, 0, 2 * offset),
                         minlength=2 * offset + 1).astype(np.float64)
    return float(np.argmax(np.convolve(counts, [1, 2, 3, 2, 1], mode="same")) - offset)


def _noise(ink: np.ndarray) -> float:
    """The paper's noise (a standard deviation) in ``ink`` whose paper is at 0, measured on the side
    away from the ink: ``1.4826 x`` the median distance below 0 of the pixels at or below it. No
    blurred stroke edge and no ink touching the border reaches that side."""
    sample = _sample(ink)
    below = -sample[sample <= 0]
    return 1.4826 * float(np.median(below)) if below.size else 0.0


def _ink_mask(ink: np.ndarray) -> np.ndarray:
    """Step 4: Otsu's threshold over the whole image (paper at 0, ink positive), raised to at
    least 4 standard deviations of the paper's noise."""
    return ink > max(otsu_threshold(_sample(ink)), 4 * _noise(ink))


def _cells(values: np.ndarray, blocks: int = 8) -> np.ndarray:
    """The pixels of each of ``blocks x blocks`` cells, ``[blocks, blocks, n]`` (about 16x16 samples
    a cell are plenty for a percentile, and keep this a few milliseconds)."""
    height, width = values.shape
    step = max(1, min(height, width) // (blocks * 16))
    cell_h, cell_w = len(range(0, height, step)) // blocks, len(range(0, width, step)) // blocks
    sample = values[::step, ::step][:cell_h * blocks, :cell_w * blocks]
    return sample.reshape(blocks, cell_h, blocks, cell_w).transpose(0, 2, 1, 3).reshape(blocks, blocks, -1)


def _paper_grid(ink: np.ndarray, blocks: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``(level, spread)`` of each of ``blocks x blocks`` cells: the paper's level (the 30th
    percentile of its pixels: ink is a minority in most cells) and the 70th minus the 30th
    percentile (small where the cell is all paper, or all ink)."""
    low, high = np.percentile(_cells(ink, blocks), [30, 70], axis=2)
    return low, high - low


def _background(grid: np.ndarray, darkest: float, shape: tuple[int, int]) -> np.ndarray:
    """A smooth estimate ``shape`` of uneven paper (a shadow): the cells' levels, bilinearly
    interpolated. A cell whose level is 60% of the ``darkest`` ink or more is inside a thick
    stroke, not in a shadow: it takes the mean of its neighbours instead, so that the stroke is
    not subtracted from itself."""
    blocks = grid.shape[0]
    paper = grid < 0.6 * darkest
    while paper.any() and not paper.all():  # fill ink cells from their paper neighbours, ring by ring
        padded_grid = np.pad(np.where(paper, grid, 0.0), 1)
        padded_paper = np.pad(paper, 1).astype(np.float64)
        total = sum(padded_grid[1 + dr:1 + dr + blocks, 1 + dc:1 + dc + blocks]
                    for dr in (-1, 0, 1) for dc in (-1, 0, 1))
        counted = sum(padded_paper[1 + dr:1 + dr + blocks, 1 + dc:1 + dc + blocks]
                      for dr in (-1, 0, 1) for dc in (-1, 0, 1))
        fill = ~paper & (counted > 0)
        grid = np.where(fill, total / np.maximum(counted, 1), grid)
        paper = paper | fill
    smooth = Image.fromarray(grid.astype(np.float32)).resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    return np.asarray(smooth, dtype=np.float32)


def _rules(boxes: np.ndarray, areas: np.ndarray, height: int, width: int) -> np.ndarray:
    """Which components are straight lines along an edge: the line of a form's box, a ruler.

    A rule spans at least 85% of the side it runs along, is at most ``max(3, 8%)`` of the other
    side thick, fills 70% of its box and lies in the outer tenth of the image.
    """
    tall = boxes[:, 1] - boxes[:, 0] + 1
    wide = boxes[:, 3] - boxes[:, 2] + 1
    solid = areas >= 0.7 * tall * wide
    horizontal = (wide >= 0.85 * width) & (tall <= max(3, 0.08 * height)) & (
        (boxes[:, 0] < 0.1 * height) | (boxes[:, 1] >= 0.9 * height - 1))
    vertical = (tall >= 0.85 * height) & (wide <= max(3, 0.08 * width)) & (
        (boxes[:, 2] < 0.1 * width) | (boxes[:, 3] >= 0.9 * width - 1))
    return solid & (horizontal | vertical)


def _dilate(values: np.ndarray, times: int = 1) -> np.ndarray:
    """Grayscale dilation: the maximum over each pixel's 3x3 neighbourhood, ``times`` times.

    Alternating a 3x3 square with a plus-shaped cross grows shapes roughly as a disc (an octagon).
    """
    out = values.astype(np.float32)
    for step in range(times):
        grown = out.copy()
        np.maximum(grown[1:], out[:-1], out=grown[1:])
        np.maximum(grown[:-1], out[1:], out=grown[:-1])
        np.maximum(grown[:, 1:], out[:, :-1], out=grown[:, 1:])
        np.maximum(grown[:, :-1], out[:, 1:], out=grown[:, :-1])
        if step % 2 == 0:  # diagonals too: a square step
            np.maximum(grown[1:, 1:], out[:-1, :-1], out=grown[1:, 1:])
            np.maximum(grown[1:, :-1], out[:-1, 1:], out=grown[1:, :-1])
            np.maximum(grown[:-1, 1:], out[1:, :-1], out=grown[:-1, 1:])
            np.maximum(grown[:-1, :-1], out[1:, 1:], out=grown[:-1, :-1])
        out = grown
    return out


def _erode(values: np.ndarray, times: int = 1) -> np.ndarray:
    """Grayscale erosion (the minimum over 3x3 neighbourhoods): the dual of :func:`_dilate`."""
    return 1.0 - _dilate(1.0 - values, times)


def stroke_width(mask: np.ndarray) -> float:
    """Estimated stroke width of a boolean mask: ``2 * area / perimeter``.

    A stroke of width ``w`` and length ``L >> w`` has area ``w L`` and perimeter ``~2 L``.
    The perimeter counts the pixel edges between ink and background.
    """
    area = int(mask.sum())
    if area == 0:
        return 0.0
    padded = np.pad(mask, 1).astype(np.int8)
    perimeter = int(np.abs(np.diff(padded, axis=0)).sum() + np.abs(np.diff(padded, axis=1)).sum())
    return 2.0 * area / perimeter


# -- to 28x28 -------------------------------------------------------------------------------------

def to_mnist(ink: np.ndarray, *, normalise_stroke: bool = True) -> np.ndarray:
    """Steps 6-8: crop, normalise the stroke, scale the longer side to 20, centre by mass in 28x28.

    Args:
        ink: float ``[H, W]`` in [0, 1], 1 = ink (the output of :func:`find_ink`, or a mask).

    Returns:
        uint8 ``[28, 28]``, white digit on black.
    """
    rows = np.flatnonzero(ink.max(axis=1) > 0)
    cols = np.flatnonzero(ink.max(axis=0) > 0)
    if len(rows) == 0:
        raise ImageError("no ink found: the image is blank")
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.float32)
    height, width = crop.shape
    scale = BOX / max(height, width)
    if normalise_stroke:
        # work at 4x the final scale so a dilation step is a quarter of an output pixel
        fine = 4 * scale
        big = (max(1, round(width * fine)), max(1, round(height * fine)))
        crop = _resize(crop, big)
        width_out = stroke_width(crop >= 0.5) / 4  # in output pixels
        if 0 < width_out < 0.75 * TARGET_STROKE:
            crop = _dilate(crop, round((TARGET_STROKE - width_out) * 4 / 2))
        elif width_out > 1.5 * TARGET_STROKE:
            # thin a blobby marker stroke, but never below the target width
            crop = _erode(crop, int((width_out - TARGET_STROKE) * 4 / 2))
    small = _resize(crop, (max(1, round(width * scale)), max(1, round(height * scale))))
    np.clip(small, 0, None, out=small)
    if small.max() <= 0:
        raise ImageError("no ink found: the digit vanished when scaled (is it a single dot?)")
    small /= small.max()
    total = small.sum()
    grid_rows, grid_cols = np.indices(small.shape)
    centre_row = float((grid_rows * small).sum() / total)
    centre_col = float((grid_cols * small).sum() / total)
    top = int(np.clip(round(CENTRE - centre_row), 0, SIZE - small.shape[0]))
    left = int(np.clip(round(CENTRE - centre_col), 0, SIZE - small.shape[1]))
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    out[top:top + small.shape[0], left:left + small.shape[1]] = small
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _resize(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float ``[H, W]`` to ``size = (width, height)``: bicubic, anti-aliased when reducing.

    Bicubic rather than Lanczos: Lanczos' larger negative lobes ring around every stroke, and
    enlarging a small scan 10 times turns the ripples into faint rings of invented ink.
    """
    resized = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32)).resize(
        size, Image.Resampling.BICUBIC)
    return np.clip(np.asarray(resized, dtype=np.float32), 0, 1)


# -- public API -----------------------------------------------------------------------------------

def preprocess(image, *, invert: bool | None = None, normalise_stroke: bool = True) -> np.ndarray:
    """Any image of one digit -> uint8 ``[28, 28]`` white on black, as MNIST.

    Args:
        image: an array (``[H, W]`` gray or ``[H, W, 3|4]``), a Pillow image, a path or bytes.
        invert: force the polarity (True: dark ink on light paper); None detects it.
        normalise_stroke: make thin pen lines and thick marker strokes MNIST-like in width.

    Raises:
        ImageError: not an image, or no ink.
    """
    found = find_ink(image, invert=invert)
    return to_mnist(found.ink, normalise_stroke=normalise_stroke)


def load_digit(path: str | os.PathLike | bytes, **options) -> np.ndarray:
    """Read an image file holding one digit -> uint8 ``[28, 28]`` (see :func:`preprocess`)."""
    gray = load_image(path, max_side=WORK_MAX_SIDE)
    try:
        return preprocess(gray, **options)
    except ImageError as exc:
        if isinstance(path, (bytes, bytearray, memoryview)):
            raise
        raise ImageError(f"{path}: {exc}") from None


def digit_groups(found: Ink, overlap: float = 0.5) -> list[np.ndarray]:
    """Group components into digits, left to right; returns each group's label ids.

    Components whose column ranges overlap by at least ``overlap`` of the narrower one are one
    digit (the two strokes of a broken 5, the bar of a 7 written apart). Groups with less than a
    tenth of the largest group's ink that are also under half its height are dropped (stray marks).
    """
    order = np.argsort(found.boxes[:, 2], kind="stable")
    groups: list[list[int]] = []
    spans: list[list[int]] = []  # left, right, top, bottom, area of each group
    for k in order:
        top, bottom, left, right = (int(v) for v in found.boxes[k])
        merged = False
        for span, members in zip(spans, groups, strict=True):
            shared = min(span[1], right) - max(span[0], left) + 1
            narrower = min(span[1] - span[0], right - left) + 1
            if shared > 0 and shared >= overlap * narrower:
                span[0], span[1] = min(span[0], left), max(span[1], right)
                span[2], span[3] = min(span[2], top), max(span[3], bottom)
                span[4] += int(found.areas[k])
                members.append(k)
                merged = True
                break
        if not merged:
            spans.append([left, right, top, bottom, int(found.areas[k])])
            groups.append([k])
    biggest = max(span[4] for span in spans)
    tallest = max(span[3] - span[2] + 1 for span in spans)
    kept = [(span[0], np.asarray(found.ids[members])) for span, members in zip(spans, groups, strict=True)
            if span[4] >= 0.1 * biggest or span[3] - span[2] + 1 >= 0.5 * tallest]
    return [ids for _, ids in sorted(kept, key=lambda item: item[0])]


def split_digits(image, *, invert: bool | None = None, normalise_stroke: bool = True) -> list[np.ndarray]:
    """A row of digits -> one uint8 ``[28, 28]`` per digit, left to right.

    Each digit is a group of connected components (see :func:`digit_groups`), preprocessed alone.

    Raises:
        ImageError: not an image, or no ink.
    """
    found = find_ink(image, invert=invert)
    digits = []
    for ids in digit_groups(found):
        rows = np.flatnonzero(np.isin(found.labels, ids).any(axis=1))
        cols = np.flatnonzero(np.isin(found.labels, ids).any(axis=0))
        top, bottom = max(rows[0] - 1, 0), rows[-1] + 2
        left, right = max(cols[0] - 1, 0), cols[-1] + 2
        own = _dilate(np.isin(found.labels[top:bottom, left:right], ids))
        digits.append(to_mnist(found.ink[top:bottom, left:right] * own, normalise_stroke=normalise_stroke))
    return digits


def expand_image_paths(sources: str | os.PathLike | list | tuple) -> list[Path]:
    """Files, folders (their image files, sorted, not recursive) and glob patterns -> image paths.

    Raises:
        ImageError: a path that does not exist, a folder without images, a glob that matches nothing.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    paths: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ImageError(f"folder {path} holds no .png/.jpg/.bmp/.gif/.webp images")
            paths.extend(found)
        elif path.exists():
            paths.append(path)
        elif any(ch in str(source) for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(str(source), recursive=True) if Path(p).is_file())
            if not found:
                raise ImageError(f"no files match {source}")
            paths.extend(found)
        else:
            raise ImageError(f"image file not found: {path}")
    return paths


def load_images(sources: str | os.PathLike | list | tuple, **options) -> list[tuple[Path, np.ndarray]]:
    """Load every image named by files, folders or globs: ``[(path, uint8 [28, 28]), ...]``.

    Raises:
        ImageError: the first file that cannot be read (its path is in the message).
    """
    return [(path, load_digit(path, **options)) for path in expand_image_paths(sources)]
