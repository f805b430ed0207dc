import numpy as np
import pytest

import digitnet.kernels
from digitnet import Classifier
from digitnet.errors import ConfigError
from digitnet.nn.sequential import Sequential


def digits_like(n=400, seed=0):
    """Four classes with labels 3, 5, 7, 9 (not 0..K-1, to test the label mapping)."""
    rng = np.random.default_rng(seed)
    which = rng.integers(0, 4, size=n)
    images = rng.integers(0, 30, size=(n, 28, 28)).astype(np.uint8)
    for k in range(4):
        images[which == k, 4 + 5 * k:8 + 5 * k, 4:24] = 250
    return images, np.array([3, 5, 7, 9])[which]


def test_fit_predict_score_like_scikit_learn():
    X, y = digits_like()
    clf = Classifier("784-32-4", optimizer="adam", lr=3e-3, epochs=4, batch_size=32, seed=1)
    assert clf.fit(X, y) is clf
    assert clf.classes_.tolist() == [3, 5, 7, 9]
    assert set(np.unique(clf.predict(X))) <= {3, 5, 7, 9}
    assert clf.score(X, y) > 0.95
    proba = clf.predict_proba(X[:5])
    assert proba.shape == (5, 4) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X[:5]))
    metrics = clf.evaluate(X, y)
    assert metrics["accuracy"] == pytest.approx(clf.score(X, y))
    assert "Dense" in clf.summary()


def test_float_and_flat_inputs_work_like_uint8_images():
    X, y = digits_like()
    a = Classifier("784-16-4", epochs=2, seed=0).fit(X, y)
    b = Classifier("784-16-4", epochs=2, seed=0).fit(X.reshape(len(X), -1).astype(np.float32) / 255, y)
    assert np.array_equal(a.predict(X), b.predict(X.reshape(len(X), -1).astype(np.float32) / 255))


def test_save_and_load_round_trip(tmp_path):
    X, y = digits_like()
    clf = Classifier("784-16-4", epochs=2, seed=0).fit(X, y)
    path = clf.save(tmp_path / "clf.safetensors")
    again = Classifier.load(path)
    assert again.classes_.tolist() == [3, 5, 7, 9]
    assert np.array_equal(again.predict_proba(X), clf.predict_proba(X))


def test_validation_data_is_reported_each_epoch():
    X, y = digits_like()
    clf = Classifier("784-16-4", epochs=3, seed=0).fit(X[:300], y[:300], validation_data=(X[300:], y[300:]))
    assert len(clf.history.val_accuracy) == 3 and all(v is not None for v in clf.history.val_accuracy)


def test_preset_and_errors():
    assert Classifier(preset="seed-002").config.lr == 0.1
    with pytest.raises(ConfigError):
        Classifier("784-16-4").predict(np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(ConfigError, match="unknown"):
        Classifier("784-16-4", learning_rate=0.1)
    X, y = digits_like(50)
    with pytest.raises(ConfigError, match="outputs"):
        Classifier("784-16-2", epochs=1).fit(X, y)


def test_kernels_choice(monkeypatch):
    with pytest.raises(ConfigError, match="unknown kernels 'gpu'"):
        Classifier("784-16-4", kernels="gpu")
    X, y = digits_like(100)
    returned = []

    def speed_up(model, loss_fn, optimizer):
        returned.append(Sequential(model.layers, input_shape=model.input_shape, rng=model.rng))
        return returned[-1], loss_fn, optimizer

    monkeypatch.setattr(digitnet.kernels, "speed_up", speed_up)
    Classifier("784-16-4", epochs=1, kernels="reference").fit(X, y)
    assert returned == []
    clf = Classifier("784-16-4", epochs=1).fit(X, y)
    assert clf.model is returned[0]   # the object to use from then on
    assert clf.score(X, y) > 0.25

