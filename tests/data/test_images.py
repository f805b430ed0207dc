"""Preprocessing of user images: real MNIST test digits, drawn big, moved, inverted, made transparent,
JPEG-compressed or thickened, must come back centred, 20 pixels tall and read as the same digit."""

from __future__ import annotations

import io
import struct
import zlib
from collections import deque

import numpy as np
import pytest
from PIL import Image, features

from digitnet.data.batches import images_to_inputs
from digitnet.data.images import (
    CENTRE,
    as_gray,
    expand_image_paths,
    find_ink,
    label_components,
    load_digit,
    load_image,
    load_images,
    native_resolution,
    otsu_threshold,
    preprocess,
    split_digits,
    stroke_width,
)
from digitnet.errors import ImageError
from tests.web.support import encode, mnist_split, render, row_of_digits, trained_model, with_alpha


@pytest.fixture(scope="module")
def model(mnist_path):
    model, accuracy = trained_model()
    assert accuracy > 0.93  # the test model is good enough for the label checks below
    return model


def predict(model, images) -> np.ndarray:
    return model.predict(images_to_inputs(np.stack(images), (784,)))


@pytest.fixture(scope="module")
def digits(model):
    """40 real MNIST test digits in one piece that the model reads right as they are: (images, labels)."""
    images, labels = mnist_split("test")
    chosen = []
    for index in range(400):
        if label_components(images[index] > 0)[1] == 1 and predict(model, [images[index]])[0] == labels[index]:
            chosen.append(index)
        if len(chosen) == 40:
            break
    return images[chosen], labels[chosen]


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(image.shape)
    total = image.sum(dtype=np.float64)
    return float((rows * image).sum() / total), float((cols * image).sum() / total)


def ink_box(image: np.ndarray) -> tuple[int, int]:
    """(height, width) of the nonzero pixels."""
    rows = np.flatnonzero(image.max(axis=1) > 0)
    cols = np.flatnonzero(image.max(axis=0) > 0)
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def _jpeg(gray):
    return load_image(encode(gray, "JPEG", quality=40))


TRANSFORMS = {
    "big black on white": lambda d: render(d),
    "white on black": lambda d: render(d, invert=False),
    "off-centre": lambda d: render(d, canvas=400, digit_size=120, offset=(-110, 120)),
    "small": lambda d: render(d, canvas=300, digit_size=30),
    "thick": lambda d: render(d, thicken=6),
    "alpha": lambda d: load_image(encode(with_alpha(render(d)))),
    "jpeg": lambda d: _jpeg(render(d)),
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_transformed_digit_is_centred_and_read_the_same(model, digits, name):
    images, labels = digits
    outputs = [preprocess(TRANSFORMS[name](digit)) for digit in images]
    for out in outputs:
        assert out.shape == (28, 28) and out.dtype == np.uint8
        assert out.max() == 255
        row, col = centre_of_mass(out.astype(np.float64))
        assert abs(row - CENTRE) <= 1 and abs(col - CENTRE) <= 1
        assert max(ink_box(out)) in (19, 20)
        assert out[:, :2].max() == 0 or out[:2].max() == 0  # never pushed against two edges
    agree = (predict(model, outputs) == labels).mean()
    assert agree >= 0.9, f"{name}: only {agree:.0%} read as the original digit"


def test_mnist_digit_is_almost_unchanged(digits):
    images, _ = digits
    for digit in images[:10]:
        out = preprocess(digit).astype(np.float64)
        correlation = np.corrcoef(out.ravel(), digit.astype(np.float64).ravel())[0, 1]
        assert correlation > 0.85


def test_longer_side_is_20_pixels_and_aspect_kept():
    tall = np.zeros((300, 300), dtype=np.uint8)
    tall[50:250, 100:200] = 255  # a 200 x 100 block
    out = preprocess(tall)
    assert ink_box(out) == (20, 10)
    wide = tall.T.copy()
    assert ink_box(preprocess(wide)) == (10, 20)


def test_centre_of_mass_not_box_centre():
    """An L-shape's centre of mass is off its box centre: the mass, not the box, is centred."""
    shape = np.zeros((200, 200), dtype=np.uint8)
    shape[20:180, 20:60] = 255
    shape[140:180, 20:180] = 255
    out = preprocess(shape).astype(np.float64)
    row, col = centre_of_mass(out)
    assert abs(row - CENTRE) <= 0.5 and abs(col - CENTRE) <= 0.5
    box_rows = np.flatnonzero(out.max(axis=1) > 0)
    assert abs((box_rows[0] + box_rows[-1]) / 2 - CENTRE) > 1  # so the box is not centred


def test_photo_of_paper_with_shadow_and_noise(model, digits):
    """Gray paper, a shadow across a corner, sensor noise, dark ink, JPEG: Otsu and the background
    estimate still find the digit."""
    images, labels = digits
    rng = np.random.default_rng(0)
    size = 500
    rows, cols = np.mgrid[0:size, 0:size] / size
    outputs = []
    for digit in images[:20]:
        ink = render(digit, canvas=size, digit_size=220, invert=False) / 255.0
        paper = 205 - 100 * rows * cols + rng.normal(0, 6, (size, size))
        photo = np.clip(paper * (1 - 0.75 * ink), 0, 255).astype(np.uint8)
        out = preprocess(load_image(encode(photo, "JPEG", quality=75)))
        outputs.append(out)
        assert abs(centre_of_mass(out.astype(np.float64))[0] - CENTRE) <= 1
    assert (predict(model, outputs) == labels[:20]).mean() >= 0.9


def test_sheet_of_paper_on_a_dark_table(model, digits):
    """The border is table, not paper: the image's median (the paper) decides the polarity and the
    table, touching the edges, is dropped."""
    images, labels = digits
    rng = np.random.default_rng(1)
    outputs = []
    for digit in images[:20]:
        photo = np.full((500, 500), 45.0)  # dark table
        photo[30:470, 50:460] = 205  # the sheet: 72% of the frame
        photo[100:400, 105:405] *= 1 - 0.75 * render(digit, canvas=300, digit_size=180, invert=False) / 255.0
        photo += rng.normal(0, 5, photo.shape)
        outputs.append(preprocess(load_image(encode(np.clip(photo, 0, 255).astype(np.uint8), "JPEG"))))
    assert (predict(model, outputs) == labels[:20]).mean() >= 0.85


def test_specks_are_removed():
    image = np.full((200, 200), 255, dtype=np.uint8)
    image[40:160, 95:105] = 0  # a "1"
    image[10:12, 10:12] = 0  # specks
    image[185, 170] = 0
    found = find_ink(image)
    assert len(found.ids) == 1
    height, width = ink_box(preprocess(image))
    assert height == 20 and width <= 3  # kept specks would have widened the box and shrunk the "1"


def test_photo_with_the_hard_edge_of_a_shadow(model, digits):
    """A shadow with a sharp edge across the sheet (a hand, a phone) is paper, not ink."""
    images, labels = digits
    rng = np.random.default_rng(2)
    rows, cols = np.mgrid[0:500, 0:500] / 500
    outputs = []
    for digit in images[:20]:
        paper = np.where(cols + 0.3 * rows < rng.uniform(0.3, 0.55), 125.0, 205.0)
        ink = render(digit, canvas=500, digit_size=220, invert=False) / 255.0
        photo = np.clip((paper + rng.normal(0, 5, paper.shape)) * (1 - 0.75 * ink), 0, 255).astype(np.uint8)
        outputs.append(preprocess(load_image(encode(photo, "JPEG", quality=80))))
    assert (predict(model, outputs) == labels[:20]).mean() >= 0.85


def _tight(digit: np.ndarray, side: int = 64) -> np.ndarray:
    """An MNIST digit cropped to its ink and enlarged to ``side`` pixels tall, dark on white: the
    strokes touch the top and bottom edges (and the sides, if it is as wide as tall)."""
    rows = np.flatnonzero(digit.max(axis=1) > 0)
    cols = np.flatnonzero(digit.max(axis=0) > 0)
    crop = Image.fromarray(digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])
    width = max(1, round(crop.width * side / crop.height))
    return 255 - np.asarray(crop.resize((width, side), Image.Resampling.BICUBIC))


def test_digit_cropped_tight_is_read_like_the_digit(model, digits):
    """Strokes that touch the edges are ink, not a shadow on the paper: the border is not the
    paper's measure (it was, and these ended in "no ink found" or in broken strokes)."""
    images, labels = digits
    outputs = [preprocess(_tight(digit)) for digit in images]
    for out, digit in zip(outputs[:10], images[:10], strict=True):
        assert np.corrcoef(out.ravel().astype(float), preprocess(digit).ravel().astype(float))[0, 1] > 0.8
    assert (predict(model, outputs) == labels).mean() >= 0.9


def test_ink_that_fills_the_frame():
    """A thick ring touching all four edges, its ink more than half of the image: the border is
    mostly paper, so the ring is read as a ring, not as its negative (the paper inside it)."""
    rows, cols = np.mgrid[0:64, 0:64] - 31.5
    radius = np.hypot(rows, cols)
    gray = np.where((radius > 12) & (radius < 33), 20, 235).astype(np.uint8)
    assert (gray < 128).mean() > 0.5
    out = preprocess(gray)
    assert ink_box(out) == (20, 20)
    assert out[12:17, 12:17].max() < 60  # the hole in the middle
    assert out[14, 5:8].min() > 200 and out[5:8, 14].min() > 200  # the ring around it


def test_dark_ink_on_dim_gray_paper(model, digits):
    """Paper darker than mid-gray (a dim photo): the paper is on the border's side of Otsu's
    threshold, so the ink is still the dark part."""
    images, labels = digits
    outputs = [preprocess((105 - 75 * (render(d, invert=False) / 255.0)).astype(np.uint8)) for d in images[:20]]
    assert (predict(model, outputs) == labels[:20]).mean() >= 0.9


def test_line_of_a_forms_box_is_not_ink(digits):
    """A digit cropped from a form's box, the box's line along one edge (each of the four): the
    line is dropped and the digit reads as it does without it."""
    images, _ = digits
    for k, digit in enumerate(images[:8]):
        scan = _tight(digit)
        lined = np.concatenate([np.full((2, scan.shape[1]), 70, np.uint8),  # the line, 2 px
                                np.full((3, scan.shape[1]), 255, np.uint8), scan])  # a gap, the digit
        found = find_ink(np.rot90(lined, k))
        assert np.rot90(found.ink, -k)[:2].max() == 0
        out = preprocess(np.rot90(lined, k)).astype(float)
        assert np.corrcoef(out.ravel(), preprocess(np.rot90(scan, k)).ravel().astype(float))[0, 1] > 0.95


def test_blocky_enlargement_goes_back_to_its_own_pixels(model, digits):
    """A 16x16 scan enlarged by repeating pixels is read at 16x16, whatever the factor; smooth
    enlargements, noisy photos and drawings with a few straight edges are left as they are."""
    images, labels = digits
    outputs = []
    for digit in images[:10]:
        small = np.asarray(Image.fromarray(255 - digit).resize((16, 16), Image.Resampling.BOX))
        assert np.array_equal(native_resolution(np.kron(small, np.ones((4, 4), np.uint8))), small)
        for size in (64, 60, 37):
            big = np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.NEAREST))
            assert native_resolution(big).shape == (16, 16), size
        outputs.append(preprocess(big))
        smooth = np.asarray(Image.fromarray(small).resize((64, 64), Image.Resampling.BICUBIC))
        assert native_resolution(smooth).shape == (64, 64)
    assert (predict(model, outputs) == labels[:10]).mean() >= 0.9
    noisy = np.clip(np.random.default_rng(0).normal(200, 5, (64, 64)), 0, 255).astype(np.uint8)
    assert native_resolution(noisy).shape == (64, 64)
    bars = np.full((200, 300), 255, dtype=np.uint8)
    bars[30:40, 60:120] = bars[50:170, 60:70] = bars[160:170, 60:130] = bars[40:170, 200:210] = 0
    assert native_resolution(bars).shape == (200, 300)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "WEBP"])
def test_every_format_loads(model, digits, fmt, tmp_path):
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("this Pillow has no WebP support")
    images, labels = digits
    path = tmp_path / f"digit.{fmt.lower()}"
    path.write_bytes(encode(render(images[0]), fmt))
    out = load_digit(path)
    assert predict(model, [out])[0] == labels[0]


def test_exif_rotation_is_applied():
    upright = np.full((120, 80), 255, dtype=np.uint8)
    upright[10:30, 10:70] = 0  # a bar at the top
    raw = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # stored sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buffer = io.BytesIO()
    raw.save(buffer, "JPEG", exif=exif, quality=95)
    loaded = load_image(buffer.getvalue())
    assert loaded.shape == (120, 80)
    assert loaded[10:30, 10:70].mean() < 40 and loaded[60:, :].mean() > 220


def test_sixteen_bit_png_is_scaled():
    values = np.zeros((60, 60), dtype=np.uint16)
    values[10:50, 25:35] = 65535
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "PNG")
    gray = load_image(buffer.getvalue())
    assert gray.dtype == np.uint8 and gray.max() == 255 and gray.min() == 0


def test_arrays_of_every_kind():
    block = np.zeros((100, 100), dtype=np.uint8)
    block[20:80, 45:55] = 255
    reference = preprocess(block)
    assert np.array_equal(preprocess(block.astype(np.float32) / 255), reference)
    assert np.array_equal(preprocess(block > 0), reference)
    rgb = np.repeat(block[:, :, None], 3, axis=2)
    assert np.array_equal(preprocess(rgb), reference)
    assert np.array_equal(preprocess(Image.fromarray(block)), reference)


# -- several digits --------------------------------------------------------------------------------

def test_row_of_digits_reads_as_the_number(model, digits):
    images, labels = digits
    rng = np.random.default_rng(0)
    for _ in range(6):
        picks = rng.choice(len(images), size=int(rng.integers(3, 5)), replace=False)
        parts = split_digits(row_of_digits([images[k] for k in picks]))
        assert len(parts) == len(picks)
        assert "".join(map(str, predict(model, parts))) == "".join(str(labels[k]) for k in picks)


def test_broken_digit_stays_one_digit():
    """Two pieces one above the other (a 5 whose bar was lifted off) are one digit, not two."""
    image = np.full((200, 300), 255, dtype=np.uint8)
    image[30:40, 60:120] = 0  # the bar
    image[50:170, 60:70] = 0  # the body below it, not touching
    image[160:170, 60:130] = 0
    image[40:170, 200:210] = 0  # a "1" further right
    assert len(split_digits(image)) == 2


# -- bad input ---------------------------------------------------------------------------------------

def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` pixels and holds almost nothing (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize("data, message", [
    (b"hello, this is text", "not a PNG, JPEG"),
    (b"", "empty"),
    (b"II*\x00" + b"\x00" * 64, "not a PNG, JPEG"),  # TIFF: not an accepted format
    (_png_header_only(7000, 7000), "49,000,000 pixels"),
    (_png_header_only(60000, 60000), "too large"),
])
def test_bad_bytes_raise_image_error(data, message):
    with pytest.raises(ImageError, match=message):
        load_image(data)


def test_truncated_image_raises_image_error(digits):
    data = encode(render(digits[0][0]), "PNG")
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(data[: len(data) // 2])


def test_size_limits():
    data = encode(np.zeros((50, 50), dtype=np.uint8))
    with pytest.raises(ImageError, match="limit"):
        load_image(data, max_bytes=10)
    with pytest.raises(ImageError, match="limit is 100"):
        load_image(data, max_pixels=100)


def _dots() -> np.ndarray:
    image = np.full((100, 100), 255, dtype=np.uint8)
    image[[20, 50, 80, 60], [30, 70, 15, 40]] = 0
    return image


@pytest.mark.parametrize("image", [
    np.full((100, 100), 255, dtype=np.uint8),  # blank white
    np.zeros((100, 100), dtype=np.uint8),  # blank black
    np.full((100, 100), 128, dtype=np.uint8),
    np.clip(np.random.default_rng(0).normal(200, 4, (100, 100)), 0, 255).astype(np.uint8),  # paper noise
    _dots(),  # nothing but lone black pixels: specks, not a digit
])
def test_no_ink_raises_image_error(image):
    with pytest.raises(ImageError, match="no ink"):
        preprocess(image)
    with pytest.raises(ImageError, match="no ink"):
        split_digits(image)


def test_bad_arrays_and_files(tmp_path):
    with pytest.raises(ImageError, match="shape"):
        preprocess(np.zeros(10))
    with pytest.raises(ImageError, match="NaN"):
        as_gray(np.full((5, 5), np.nan))
    with pytest.raises(ImageError, match="not found"):
        load_digit(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)
    blank = tmp_path / "blank.png"
    blank.write_bytes(encode(np.full((40, 40), 255, dtype=np.uint8)))
    with pytest.raises(ImageError, match="blank.png: no ink"):
        load_digit(blank)


# -- building blocks ----------------------------------------------------------------------------------

def _flood_fill_labels(mask: np.ndarray) -> np.ndarray:
    """Reference 8-connected labelling by breadth-first search."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    count = 0
    for start in zip(*np.nonzero(mask), strict=True):
        if labels[start]:
            continue
        count += 1
        labels[start] = count
        queue = deque([start])
        while queue:
            r, c = queue.popleft()
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr, cc = r + dr, c + dc
                    if 0 <= rr < mask.shape[0] and 0 <= cc < mask.shape[1] and mask[rr, cc] and not labels[rr, cc]:
                        labels[rr, cc] = count
                        queue.append((rr, cc))
    return labels


@pytest.mark.parametrize("density", [0.2, 0.45, 0.6])
def test_labelling_matches_flood_fill(density):
    rng = np.random.default_rng(int(density * 100))
    for _ in range(5):
        mask = rng.random((37, 53)) < density
        labels, count = label_components(mask)
        expected = _flood_fill_labels(mask)
        assert count == expected.max()
        assert np.array_equal(labels > 0, mask)
        # same partition: a one-to-one map between our labels and the reference's
        pairs = set(zip(labels[mask].tolist(), expected[mask].tolist(), strict=True))
        assert len(pairs) == count


def test_labelling_diagonal_and_spiral():
    diagonal = np.eye(6, dtype=bool)
    assert label_components(diagonal)[1] == 1  # 8-connected
    spiral = np.zeros((9, 9), dtype=bool)
    spiral[0, :] = spiral[:, 8] = spiral[8, :] = spiral[2:, 0] = True
    spiral[2, :7] = spiral[2:7, 6] = spiral[6, 2:7] = spiral[4:7, 2] = True
    labels, count = label_components(spiral)
    assert count == 1
    assert label_components(np.zeros((4, 4), dtype=bool))[1] == 0


def test_otsu_splits_two_modes():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(30, 5, 5000), rng.normal(200, 10, 500)])
    threshold = otsu_threshold(values)
    assert 45 < threshold < 170


def test_stroke_width_of_a_bar():
    bar = np.zeros((200, 200), dtype=bool)
    bar[20:180, 95:101] = True  # 6 wide, 160 long
    assert stroke_width(bar) == pytest.approx(6, rel=0.05)


def test_expand_paths(tmp_path):
    png = encode(render(np.pad(np.full((20, 4), 255, dtype=np.uint8), 4)))
    for name in ("b.png", "a.jpg", "c.txt"):
        (tmp_path / name).write_bytes(png)
    assert [p.name for p in expand_image_paths(tmp_path)] == ["a.jpg", "b.png"]
    assert [p.name for p in expand_image_paths(str(tmp_path / "*.png"))] == ["b.png"]
    loaded = load_images([tmp_path / "b.png", str(tmp_path / "a.*")])
    assert [p.name for p, _ in loaded] == ["b.png", "a.jpg"]
    assert all(image.shape == (28, 28) for _, image in loaded)
    with pytest.raises(ImageError, match="no files match"):
        expand_image_paths(str(tmp_path / "*.gif"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="holds no"):
        expand_image_paths(tmp_path / "empty")
    with pytest.raises(ImageError, match="not found"):
        expand_image_paths(tmp_path / "nope.png")
