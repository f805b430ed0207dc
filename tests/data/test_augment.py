"""Data augmentation: shapes, determinism, identity, the geometry of shifts/rotations/scalings,
smoothness of the elastic fields, and argument checking."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.data.augment import (
    Augmenter,
    affine_coordinates,
    bilinear_sample,
    elastic_displacement,
    gaussian_kernel,
    gaussian_smooth,
    smoothing_matrix,
)
from digitnet.errors import ConfigError


def blob_images(batch=8, size=28, seed=0):
    """uint8 digit-like images: a bright filled ellipse near the centre, slightly different per image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images = np.zeros((batch, size, size), dtype=np.uint8)
    for n in range(batch):
        cy, cx = size / 2 + rng.uniform(-2, 2, 2)
        inside = ((yy - cy) / 7) ** 2 + ((xx - cx) / 4) ** 2 <= 1
        images[n][inside] = 255
    return images


def centre_of_mass(images):
    """``(x, y)`` centre of mass of each image, ``[B, 2]``."""
    images = images.astype(np.float64)
    yy, xx = np.mgrid[0:images.shape[1], 0:images.shape[2]]
    mass = images.sum(axis=(1, 2))
    return np.stack([(images * xx).sum(axis=(1, 2)) / mass, (images * yy).sum(axis=(1, 2)) / mass], axis=1)


def test_output_is_uint8_of_the_same_shape_and_input_is_untouched(rng):
    images = blob_images()
    before = images.copy()
    out = Augmenter(shift=2, rotate=10, scale=0.1, elastic_alpha=34, elastic_sigma=4)(images, rng)
    assert out.shape == images.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(images, before)
    assert not np.array_equal(out, images)


def test_same_seed_same_result_different_seed_different_result():
    images = blob_images()
    augment = Augmenter(shift=2, rotate=15, scale=0.1, elastic_alpha=34, elastic_sigma=4)
    first = augment(images, np.random.default_rng(7))
    np.testing.assert_array_equal(first, augment(images, np.random.default_rng(7)))
    assert not np.array_equal(first, augment(images, np.random.default_rng(8)))


def test_zero_magnitudes_are_the_identity(rng):
    images = blob_images() // 3 + np.arange(28, dtype=np.uint8)     # not just 0/255
    out = Augmenter(shift=0, rotate=0, scale=0, elastic_alpha=0)(images, rng)
    np.testing.assert_array_equal(out, images)


def test_probability_zero_leaves_every_image_unchanged(rng):
    images = blob_images()
    out = Augmenter(shift=3, rotate=20, scale=0.2, elastic_alpha=34, probability=0)(images, rng)
    np.testing.assert_array_equal(out, images)


def test_probability_half_distorts_about_half_the_images(rng):
    images = blob_images(batch=200)
    out = Augmenter(shift=3, rotate=20, scale=0, probability=0.5)(images, rng)
    changed = np.mean([not np.array_equal(a, b) for a, b in zip(out, images, strict=True)])
    assert 0.35 < changed < 0.65


@pytest.mark.parametrize(("shift_x", "shift_y"), [(2, -3), (-1, 0), (0.5, 1.5)])
def test_a_known_shift_moves_the_centre_of_mass_by_the_shift(shift_x, shift_y):
    images = blob_images(batch=3)
    ones = np.ones(3)
    source_x, source_y = affine_coordinates(28, 28, 0 * ones, ones, shift_x * ones, shift_y * ones)
    moved = bilinear_sample(images, source_x, source_y)
    np.testing.assert_allclose(centre_of_mass(moved) - centre_of_mass(images),
                               np.tile([shift_x, shift_y], (3, 1)), atol=1e-3)
    if float(shift_x).is_integer() and float(shift_y).is_integer():
        # whole-pixel shifts move pixels exactly
        np.testing.assert_array_equal(moved[:, 5:-5, 5:-5],
                                      np.roll(images, (int(shift_y), int(shift_x)), axis=(1, 2))[:, 5:-5, 5:-5])


def test_random_shifts_stay_within_the_range():
    images = blob_images(batch=64)
    out = Augmenter(shift=2, rotate=0, scale=0)(images, np.random.default_rng(3))
    moved = centre_of_mass(out) - centre_of_mass(images)
    assert np.abs(moved).max() <= 2.1
    assert np.abs(moved).max() > 1.0                                # it does shift
    assert abs(moved.mean()) < 0.5                                  # no direction favoured


def test_rotation_is_counter_clockwise_about_the_centre_and_keeps_the_mass():
    images = blob_images(batch=1)
    # a 90 degree turn: the tall ellipse becomes wide
    ones = np.ones(1)
    turned = bilinear_sample(images, *affine_coordinates(28, 28, 90 * ones, ones, 0 * ones, 0 * ones))
    rows, cols = np.nonzero(turned[0] > 128)
    assert np.ptp(cols) > np.ptp(rows)
    # a pixel right of the centre moves above it (counter-clockwise on screen)
    dot = np.zeros((1, 9, 9))
    dot[0, 4, 7] = 1.0
    turned_dot = bilinear_sample(dot, *affine_coordinates(9, 9, 90 * ones, ones, 0 * ones, 0 * ones))
    assert turned_dot[0, 1, 4] == pytest.approx(1.0, abs=1e-5)
    # small angles keep the ink: total intensity changes by a few percent at most
    out = Augmenter(shift=0, rotate=12, scale=0)(blob_images(batch=32), np.random.default_rng(0))
    ratio = out.sum(axis=(1, 2)) / blob_images(batch=32).sum(axis=(1, 2))
    assert np.all(np.abs(ratio - 1) < 0.05)


def test_scaling_changes_the_area_by_the_square_of_the_factor():
    images = blob_images(batch=2)
    ones = np.ones(2)
    bigger = bilinear_sample(images, *affine_coordinates(28, 28, 0 * ones, 1.2 * ones, 0 * ones, 0 * ones))
    area_ratio = bigger.sum(axis=(1, 2)) / images.sum(axis=(1, 2))
    np.testing.assert_allclose(area_ratio, 1.44, rtol=0.05)


def test_bilinear_sample_interpolates_and_reads_black_outside():
    image = np.array([[[0, 100], [200, 40]]], dtype=np.float32)
    at = np.array([[[0.5, -3.0], [1.0, 0.0]]], dtype=np.float32)   # x coordinates
    y = np.array([[[0.5, 0.0], [-0.5, 1.0]]], dtype=np.float32)
    out = bilinear_sample(image, at, y)
    assert out[0, 0, 0] == pytest.approx(85.0)           # mean of the 4 pixels
    assert out[0, 0, 1] == 0                             # far outside
    assert out[0, 1, 0] == pytest.approx(50.0)           # half a pixel above the top-right pixel
    assert out[0, 1, 1] == pytest.approx(200.0)          # exactly on a pixel


def test_gaussian_kernel_is_normalised_symmetric_and_has_the_right_spread():
    kernel = gaussian_kernel(4.0)
    assert len(kernel) == 2 * 12 + 1
    assert kernel.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(kernel, kernel[::-1])
    offsets = np.arange(-12, 13)
    assert np.sqrt((kernel * offsets**2).sum()) == pytest.approx(4.0, rel=0.05)


def test_gaussian_smooth_is_a_separable_2d_gaussian():
    delta = np.zeros((1, 41, 41), dtype=np.float32)
    delta[0, 20, 20] = 1.0
    smoothed = gaussian_smooth(delta, 2.0)[0]
    kernel = gaussian_kernel(2.0)
    radius = len(kernel) // 2
    expected = np.outer(kernel, kernel)
    np.testing.assert_allclose(smoothed[20 - radius:21 + radius, 20 - radius:21 + radius], expected, atol=1e-7)
    assert smoothed.sum() == pytest.approx(1.0, abs=1e-5)
    matrix = smoothing_matrix(10, 4.0)                  # a kernel longer than the signal
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=1e-6)
    constant = np.full((2, 10, 12), 3.0, dtype=np.float32)
    np.testing.assert_allclose(gaussian_smooth(constant, 4.0), 3.0, rtol=1e-5)   # radius > size works


def test_elastic_field_is_smooth_and_scaled_by_alpha():
    rng = np.random.default_rng(0)
    field = elastic_displacement(16, 28, 28, alpha=34.0, sigma=4.0, rng=rng)
    assert field.shape == (16, 2, 28, 28) and field.dtype == np.float32
    neighbour_step = np.abs(np.diff(field, axis=-1)).mean()
    spread = field.std()
    assert 0.3 < spread < 5.0                          # displacements of about a pixel
    assert neighbour_step < 0.2 * spread               # smooth: neighbours move almost together
    noise = rng.uniform(-1, 1, (16, 2, 28, 28))
    assert np.abs(np.diff(noise, axis=-1)).mean() > noise.std()     # unsmoothed noise is not
    doubled = elastic_displacement(16, 28, 28, alpha=68.0, sigma=4.0, rng=np.random.default_rng(0))
    np.testing.assert_allclose(doubled, 2 * field, rtol=1e-5)


def test_elastic_distortion_keeps_the_digit_recognisable():
    images = blob_images(batch=16)
    out = Augmenter(shift=0, rotate=0, scale=0, elastic_alpha=34, elastic_sigma=4)(images,
                                                                                   np.random.default_rng(1))
    assert not np.array_equal(out, images)
    overlap = ((out > 128) & (images > 128)).sum(axis=(1, 2)) / (images > 128).sum(axis=(1, 2))
    assert np.all(overlap > 0.6)


def test_config_round_trip_and_bad_arguments():
    augment = Augmenter(shift=1, rotate=5, scale=0.05, elastic_alpha=30, elastic_sigma=5, probability=0.8)
    assert augment.config() == {"shift": 1.0, "rotate": 5.0, "scale": 0.05, "elastic_alpha": 30.0,
                                "elastic_sigma": 5.0, "probability": 0.8}
    assert Augmenter(**augment.config()).config() == augment.config()
    for bad in ({"shift": -1}, {"scale": 1.0}, {"probability": 1.5}, {"rotate": "a lot"},
                {"elastic_alpha": 10, "elastic_sigma": 0}, {"shift": float("nan")}):
        with pytest.raises(ConfigError):
            Augmenter(**bad)
    with pytest.raises(ValueError):
        Augmenter()(np.zeros((28, 28), dtype=np.uint8), np.random.default_rng(0))


@pytest.mark.slow
def test_augmented_real_digits_keep_their_ink(mnist_train):
    images = mnist_train.images[:256]
    out = Augmenter(shift=2, rotate=10, scale=0.1, elastic_alpha=34, elastic_sigma=4)(images,
                                                                                       np.random.default_rng(0))
    ink = out.astype(np.float64).sum(axis=(1, 2)) / images.astype(np.float64).sum(axis=(1, 2))
    assert np.median(ink) == pytest.approx(1.0, abs=0.1)
    assert np.all(np.abs(centre_of_mass(out) - centre_of_mass(images)) < 4.5)
