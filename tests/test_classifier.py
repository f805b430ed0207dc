"""digitnet.Classifier as a scikit-learn estimator: its own behaviour, scikit-learn's check_estimator, and
clone, GridSearchCV(n_jobs=2), cross_val_score and Pipeline. Everything here runs on small data it makes."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import digitnet.kernels
from digitnet import Classifier
from digitnet.errors import ConfigError
from digitnet.nn.sequential import Sequential
from tests.conftest import require_module


def digits_like(n=400, seed=0):
    """Four classes with labels 3, 5, 7, 9 (not 0..K-1, to test the label mapping)."""
    rng = np.random.default_rng(seed)
    which = rng.integers(0, 4, size=n)
    images = rng.integers(0, 30, size=(n, 28, 28)).astype(np.uint8)
    for k in range(4):
        images[which == k, 4 + 5 * k:8 + 5 * k, 4:24] = 250
    return images, np.array([3, 5, 7, 9])[which]


def blobs(n=300, features=5, classes=3, seed=0):
    """Float features of any width with string labels: not digits at all."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(classes, features))
    which = rng.integers(0, classes, size=n)
    return (centres[which] + rng.normal(size=(n, features))).astype(np.float64), np.array(["a", "b", "c"])[which]


#: Settings for fast, well-behaved fits on the small tabular data of scikit-learn's checks.
SMALL = dict(hidden_layer_sizes=(16,), optimizer="adam", lr=0.01, epochs=20, batch_size=32, seed=0)


def test_fit_predict_score_on_images():
    X, y = digits_like()
    clf = Classifier((32,), optimizer="adam", lr=3e-3, epochs=4, batch_size=32, seed=1)
    assert clf.fit(X, y) is clf
    assert clf.classes_.tolist() == [3, 5, 7, 9] and clf.n_features_in_ == 784
    assert clf.model_.output_shapes()[-1] == (4,)  # one output per class in y
    assert set(np.unique(clf.predict(X))) <= {3, 5, 7, 9}
    assert clf.score(X, y) > 0.95
    proba = clf.predict_proba(X[:5])
    assert proba.shape == (5, 4) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X[:5]))
    metrics = clf.evaluate(X, y)
    assert metrics["accuracy"] == pytest.approx(clf.score(X, y))
    assert "Dense" in clf.summary()


def test_any_number_of_features_and_any_labels():
    X, y = blobs()
    clf = Classifier(**SMALL).fit(X, y)
    assert clf.n_features_in_ == 5 and clf.classes_.tolist() == ["a", "b", "c"]
    assert clf.config_.arch == "5-16-3"
    assert clf.score(X, y) > 0.9
    assert Classifier((), optimizer="adam", lr=0.05, epochs=10, seed=0).fit(X, y).config_.arch == "5-3"
    with pytest.raises(ValueError, match="X has 4 features, but Classifier is expecting 5"):
        clf.predict(X[:, :4])


def test_float_and_flat_inputs_work_like_uint8_images():
    X, y = digits_like()
    a = Classifier((16,), epochs=2, seed=0).fit(X, y)
    flat = X.reshape(len(X), -1).astype(np.float32) / 255
    b = Classifier((16,), epochs=2, seed=0).fit(flat, y)
    assert np.array_equal(a.predict(X), b.predict(flat))


def test_settings_are_kept_as_given_and_checked_at_fit():
    clf = Classifier((8, 4), optimizer="lion", lr=-1)
    assert clf.get_params()["optimizer"] == "lion" and clf.get_params()["hidden_layer_sizes"] == (8, 4)
    assert clf.set_params(lr=0.5) is clf and clf.lr == 0.5
    X, y = blobs(50)
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        clf.fit(X, y)
    with pytest.raises(ValueError, match="invalid parameter 'learning_rate'"):
        clf.set_params(learning_rate=0.1)
    with pytest.raises(TypeError):
        Classifier(learning_rate=0.1)
    with pytest.raises(ConfigError, match=r"did you mean \(128, 64\)"):
        Classifier("784-128-64-10").fit(X, y)
    assert repr(Classifier((8,), lr=0.5)) == "Classifier(hidden_layer_sizes=(8,), lr=0.5)"


def test_preset_and_errors():
    assert Classifier(preset="seed-002").config.lr == 0.1
    assert Classifier(preset="seed-002", lr=0.2).config.lr == 0.2
    with pytest.raises(ValueError, match="not fitted"):
        Classifier((16,)).predict(np.zeros((1, 28, 28), np.uint8))
    X, y = digits_like(50)
    with pytest.raises(ValueError, match="only one class"):
        Classifier((16,), epochs=1).fit(X, np.full(len(X), 3))
    with pytest.raises(ValueError, match="continuous"):
        Classifier((16,), epochs=1).fit(X, np.linspace(0, 1, len(X)))


def test_a_cnn_preset_is_sized_to_the_classes():
    X, y = digits_like(64)
    clf = Classifier(preset="cnn-fast", epochs=1, batch_size=32)
    clf.fit(X, y)
    assert clf.model_.input_shape == (1, 28, 28) and clf.predict_proba(X[:3]).shape == (3, 4)
    with pytest.raises(ValueError, match="give hidden_layer_sizes"):
        Classifier(preset="cnn-fast", epochs=1).fit(*blobs(40))


def test_save_and_load_round_trip(tmp_path):
    X, y = digits_like()
    clf = Classifier((16,), epochs=2, seed=0).fit(X, y)
    path = clf.save(tmp_path / "clf.safetensors")
    again = Classifier.load(path)
    assert again.classes_.tolist() == [3, 5, 7, 9] and again.n_features_in_ == 784
    assert np.array_equal(again.predict_proba(X), clf.predict_proba(X))


def test_pickle_keeps_the_network_not_the_buffers():
    X, y = blobs()
    clf = Classifier(**SMALL).fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(again.predict_proba(X), clf.predict_proba(X))
    assert again.partial_fit(X, y).score(X, y) > 0.8  # it can go on training


def test_validation_data_and_val_split_are_reported_each_epoch():
    X, y = digits_like()
    clf = Classifier((16,), epochs=3, seed=0).fit(X[:300], y[:300], validation_data=(X[300:], y[300:]))
    assert len(clf.history_.val_accuracy) == 3 and all(v is not None for v in clf.history_.val_accuracy)
    clf = Classifier((16,), epochs=3, seed=0, val_split=0.2, early_stopping=5).fit(X, y)
    assert all(v is not None for v in clf.history.val_accuracy)


def test_partial_fit_goes_on_from_where_it_stopped():
    X, y = blobs(600)
    clf = Classifier((16,), optimizer="adam", lr=0.01, batch_size=32, seed=0)
    with pytest.raises(ValueError, match="classes="):
        clf.partial_fit(X[:100], y[:100])
    clf.partial_fit(X[:100], y[:100], classes=["a", "b", "c"])
    for start in range(100, 600, 100):
        clf.partial_fit(X[start:start + 100], y[start:start + 100])
    assert len(clf.history_) == 6 and clf.score(X, y) > 0.8  # six small steps of 100 samples: 0.89
    with pytest.raises(ValueError, match="X has 4 features"):
        clf.partial_fit(X[:10, :4], y[:10])
    fitted = Classifier(**SMALL).fit(X, y)
    before = fitted.model_.state_dict()["layers.0.weights"].copy()
    fitted.partial_fit(X, y)  # after fit: one more epoch of the same network
    assert not np.array_equal(before, fitted.model_.state_dict()["layers.0.weights"])


def test_kernels_choice(monkeypatch):
    X, y = digits_like(100)
    with pytest.raises(ConfigError, match="unknown kernels 'gpu'"):
        Classifier((16,), kernels="gpu").fit(X, y)
    returned = []

    def speed_up(model, loss_fn, optimizer, threads=None):
        returned.append(Sequential(model.layers, input_shape=model.input_shape, rng=model.rng))
        return returned[-1], loss_fn, optimizer

    monkeypatch.setattr(digitnet.kernels, "speed_up", speed_up)
    Classifier((16,), epochs=1, kernels="reference").fit(X, y)
    assert returned == []
    clf = Classifier((16,), epochs=1).fit(X, y)
    assert clf.model_ is returned[0]   # the object to use from then on
    assert clf.score(X, y) > 0.25


# -- scikit-learn ----------------------------------------------------------------------------------
#: Checks that the default settings fail, and why. The defaults (SGD, lr 0.1) are tuned for inputs in
#: [0, 1] (pixels / 255); on these checks' unscaled blobs (|x| up to about 10) SGD at lr 0.1 diverges,
#: and digitnet reports divergence as an error rather than returning a network of NaNs.
DEFAULTS_DIVERGE = {name: "SGD at lr 0.1 diverges on unscaled features; digitnet raises DivergenceError"
                    for name in ("check_fit_idempotent", "check_fit_check_is_fitted", "check_n_features_in")}


def expected_failed_checks(estimator):
    return DEFAULTS_DIVERGE if estimator.optimizer is None else {}


def sklearn_checks():
    """scikit-learn's estimator checks, as pytest parameters (none when scikit-learn is missing)."""
    try:
        from sklearn.utils.estimator_checks import parametrize_with_checks
    except ImportError:
        return pytest.mark.parametrize("estimator, check", [])
    return parametrize_with_checks([Classifier(**SMALL), Classifier(epochs=2)],
                                   expected_failed_checks=expected_failed_checks)


@sklearn_checks()
def test_scikit_learn_check_estimator(estimator, check):
    check(estimator)


def test_scikit_learn_is_installed_for_the_checks():
    require_module("sklearn")


def test_clone_grid_search_with_two_jobs_cross_val_score_and_pipeline():
    require_module("sklearn")
    from sklearn.base import clone, is_classifier
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = blobs(240)
    clf = Classifier(**SMALL)
    assert is_classifier(clf)
    copy = clone(clf)
    assert copy is not clf and copy.get_params() == clf.get_params()

    search = GridSearchCV(Classifier(**SMALL), {"lr": [0.001, 0.01], "hidden_layer_sizes": [(8,), (16,)]},
                          cv=3, n_jobs=2)
    search.fit(X, y)
    assert set(search.best_params_) == {"lr", "hidden_layer_sizes"}
    assert search.best_score_ > 0.8 and search.score(X, y) > 0.8
    assert len(search.cv_results_["mean_test_score"]) == 4

    scores = cross_val_score(Classifier(**SMALL), X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.8

    pipe = make_pipeline(StandardScaler(), Classifier(**SMALL)).fit(X, y)
    assert pipe.score(X, y) > 0.9 and pipe.predict(X[:3]).dtype.kind == "U"
