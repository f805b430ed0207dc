import numpy as np
import pytest

from digitnet.data.batches import images_to_inputs
from digitnet.errors import ConfigError
from digitnet.robustness import (
    add_noise,
    change_thickness,
    coverage_curve,
    damage,
    damage_examples,
    robustness_curves,
    rotate_images,
    selective_accuracy,
)


@pytest.fixture(scope="module")
def trained(mnist_train):
    from digitnet.nn import Sequential, make_loss, make_optimizer
    from digitnet.training import fit

    model = Sequential.from_spec("784-32-10", rng=np.random.default_rng(0))
    fit(model, make_loss("ce"), make_optimizer("adam", 0.003), mnist_train.head(3000), epochs=1, batch_size=64,
        rng=np.random.default_rng(1))
    return model


def _dot(row, col, size=7):
    image = np.zeros((1, size, size), np.uint8)
    image[0, row, col] = 200
    return image


def test_zero_damage_returns_an_identical_copy(mnist_test):
    images = mnist_test.images[:20]
    out = damage(images)
    np.testing.assert_array_equal(out, images)
    assert out is not images and out.dtype == np.uint8
    np.testing.assert_array_equal(rotate_images(images, 360), images)


def test_noise_has_the_requested_strength_and_is_reproducible():
    grey = np.full((20, 28, 28), 128, np.uint8)
    noisy = add_noise(grey, 0.1, np.random.default_rng(0))
    diff = noisy.astype(float) - 128
    assert abs(diff.mean()) < 0.2 and diff.std() == pytest.approx(25.5, rel=0.02)
    np.testing.assert_array_equal(noisy, add_noise(grey, 0.1, np.random.default_rng(0)))
    assert add_noise(np.zeros((1, 28, 28), np.uint8), 5.0, np.random.default_rng(0)).max() == 255  # clipped
    with pytest.raises(ConfigError, match="needs an explicit numpy Generator"):
        damage(grey, noise=0.1)
    with pytest.raises(ConfigError):
        add_noise(grey, -1, np.random.default_rng(0))


def test_rotation_turns_counter_clockwise_about_the_centre():
    # right of the centre -> above it after a 90 degree counter-clockwise turn
    np.testing.assert_array_equal(rotate_images(_dot(3, 6), 90), _dot(0, 3))
    np.testing.assert_array_equal(rotate_images(_dot(3, 6), -90), _dot(6, 3))
    np.testing.assert_array_equal(rotate_images(_dot(1, 2), 180), _dot(5, 4))
    turned = rotate_images(_dot(3, 3), 37)[0]
    assert turned[3, 3] == 200 and turned.argmax() == 3 * 7 + 3  # the centre stays (its neighbours blur)


def test_rotation_keeps_a_centred_digit_whole(mnist_test):
    images = mnist_test.images[:50]
    turned = rotate_images(images, 30)
    mass = images.reshape(50, -1).sum(axis=1).astype(float)
    np.testing.assert_allclose(turned.reshape(50, -1).sum(axis=1), mass, rtol=0.06)
    back = rotate_images(turned, -30).astype(float)
    assert np.abs(back - images).mean() < 0.25 * np.abs(images.astype(float) - images.mean()).mean()


def test_thickness_dilates_and_erodes_with_a_cross():
    dot = _dot(3, 3)
    thick = change_thickness(dot, 1)[0]
    assert sorted(zip(*np.nonzero(thick), strict=True)) == [(2, 3), (3, 2), (3, 3), (3, 4), (4, 3)]
    assert np.count_nonzero(change_thickness(dot, 2)) == 13  # a diamond of radius 2
    assert np.count_nonzero(change_thickness(dot, -1)) == 0
    np.testing.assert_array_equal(change_thickness(change_thickness(dot, 1), -1), dot)
    with pytest.raises(ConfigError, match="whole number"):
        change_thickness(dot, 0.5)


def test_ink_grows_with_thickness_on_real_digits(mnist_test):
    images = mnist_test.images[:30]
    ink = [np.count_nonzero(damage(images, thickness=k) > 127) for k in (-2, -1, 0, 1, 2)]
    assert ink == sorted(ink) and ink[0] < ink[2] < ink[4]


def test_robustness_curves_start_at_the_clean_accuracy_and_fall(trained, mnist_test):
    data = mnist_test.head(500)
    curves = robustness_curves(trained, data, np.random.default_rng(0), noise_levels=(0.0, 0.5, 1.0),
                               angles=(0.0, 45.0, 90.0), thickness_levels=(-1, 0, 2))
    clean = float(np.mean(trained.predict(images_to_inputs(data.images, (784,))) == data.labels))
    assert curves["count"] == 500 and curves["clean_accuracy"] == clean
    assert curves["noise"]["accuracy"][0] == clean
    assert curves["rotation"]["accuracy"][0] == clean
    assert curves["thickness"]["accuracy"][1] == clean
    assert curves["noise"]["accuracy"][2] < clean - 0.2
    assert curves["rotation"]["accuracy"][2] < clean - 0.3
    assert curves["thickness"]["levels"] == [-1, 0, 2]
    noisy = damage(data.images, noise=0.5, rng=np.random.default_rng(7))
    assert curves["noise"]["accuracy"][1] == pytest.approx(
        np.mean(trained.predict(images_to_inputs(noisy, (784,))) == data.labels), abs=0.03)
    assert robustness_curves(trained, data, np.random.default_rng(0), noise_levels=(0.0,), angles=(0.0,),
                             thickness_levels=(0,), count=100)["count"] == 100


def test_damage_examples_show_one_digit_at_each_level(mnist_test):
    curves = {"noise": {"levels": [0.0, 0.5]}, "rotation": {"levels": [0.0, 30.0, 60.0]},
              "thickness": {"levels": [-1, 0, 1]}}
    examples = damage_examples(mnist_test.images[0], curves, np.random.default_rng(0))
    assert [examples[k].shape[0] for k in ("noise", "rotation", "thickness")] == [2, 3, 3]
    np.testing.assert_array_equal(examples["noise"][0], mnist_test.images[0])
    np.testing.assert_array_equal(examples["thickness"][1], mnist_test.images[0])


def test_coverage_starts_at_one_and_trades_coverage_for_accuracy():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
    labels = np.array([0, 1, 1, 0])  # right, wrong, right, wrong
    curve = coverage_curve(probs, labels, thresholds=(0.0, 0.56, 0.65, 0.8, 0.95))
    assert curve["coverage"] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert curve["accuracy"] == [0.5, 2 / 3, 1.0, 1.0, None]
    assert curve["sorted"]["coverage"] == [0.25, 0.5, 0.75, 1.0]
    assert curve["sorted"]["accuracy"] == [1.0, 1.0, 2 / 3, 0.5]


def test_coverage_on_a_real_model(trained, mnist_test):
    data = mnist_test.head(1000)
    probs = trained.predict_proba(images_to_inputs(data.images, (784,)))
    curve = coverage_curve(probs, data.labels)
    accuracy = float(np.mean(probs.argmax(axis=1) == data.labels))
    assert curve["thresholds"][0] == 0.0 and curve["coverage"][0] == 1.0
    assert curve["accuracy"][0] == pytest.approx(accuracy)
    assert curve["sorted"]["accuracy"][-1] == pytest.approx(accuracy)
    assert np.all(np.diff(curve["coverage"]) <= 0)
    at_90 = selective_accuracy(probs, data.labels, 0.9)
    assert at_90["coverage"] < 1 and at_90["accuracy"] > accuracy
    assert at_90["answered"] == np.count_nonzero(probs.max(axis=1) >= 0.9) and at_90["total"] == 1000
    with pytest.raises(ConfigError):
        selective_accuracy(probs, data.labels, 1.5)
