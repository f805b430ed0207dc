"""A scikit-learn / Keras style interface: ``Classifier(...).fit(X, y).predict(X)``.

``X`` is either uint8 images ``[N, 28, 28]`` (or ``[N, 784]``) with values 0-255, or float
features in [0, 1] of shape ``[N, 784]`` (or ``[N, 1, 28, 28]`` for CNNs). ``y`` holds integer
labels; like scikit-learn, the sorted distinct labels become ``classes_`` and ``predict`` returns
values from it.

    >>> from digitnet import Classifier
    >>> clf = Classifier("784-128-64-10", optimizer="adam", lr=1e-3, epochs=5).fit(x_train, y_train)
    >>> clf.score(x_test, y_test)
    0.97...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from digitnet.config import TrainConfig, build_loss, load_preset
from digitnet.errors import ConfigError
from digitnet.kernels import resolve
from digitnet.training import ProgressBar, build_trainer, evaluate


class Classifier:
    """A digit classifier with ``fit``, ``predict``, ``predict_proba``, ``score`` and ``evaluate``.

    Args:
        arch: layer sizes such as ``"784-128-64-10"`` (the output size is checked against the labels).
        preset: start from a named preset instead (see ``digitnet train --help``).
        verbose: print one line per epoch.
        kernels: "fast" or "reference" (the textbook layers of digitnet.nn); None reads
            ``$DIGITNET_KERNELS``, else fast. The fitted network is the same either way.
        **settings: any :class:`~digitnet.config.TrainConfig` field: ``activation``, ``optimizer``,
            ``lr``, ``epochs``, ``batch_size``, ``dropout``, ``weight_decay``, ``schedule``, ``seed``, ...
    """

    def __init__(self, arch: str | None = None, *, preset: str | None = None, verbose: bool = False,
                 kernels: str | None = None, **settings: Any) -> None:
        base = load_preset(preset) if preset else TrainConfig()
        if arch is not None:
            settings["arch"] = arch
            settings["layers"] = None
        try:
            self.config = base.replace(**settings)
        except TypeError as exc:
            raise ConfigError(f"unknown setting: {exc}") from None
        self.verbose = verbose
        if kernels is not None:
            resolve(kernels)  # a bad choice fails here, not in fit
        self.kernels = kernels
        self.model = None
        self.history = None
        self.classes_: np.ndarray | None = None

    # -- helpers ---------------------------------------------------------------------------------
    def _inputs(self, X: np.ndarray) -> np.ndarray:
        """Keep uint8 images as they are (scaled per batch); cast anything else to float32."""
        X = np.asarray(X)
        if X.dtype == np.uint8:
            return X
        if X.dtype.kind not in "fiu":
            raise ConfigError(f"X must be numeric, got dtype {X.dtype}")
        return X.astype(np.float32, copy=False)

    def _features(self, X: np.ndarray) -> np.ndarray:
        X = self._inputs(X)
        shape = (len(X), *self.model.input_shape)
        if X.dtype == np.uint8:
            return (X.reshape(shape) * np.float32(1 / 255)).astype(np.float32)
        return X.reshape(shape)

    def _encode(self, y: np.ndarray) -> np.ndarray:
        index = np.searchsorted(self.classes_, y)
        clipped = np.minimum(index, len(self.classes_) - 1)
        if np.any(index >= len(self.classes_)) or np.any(self.classes_[clipped] != y):
            raise ConfigError("y holds labels that were not seen in fit")
        return index.astype(np.uint8)

    # -- API -------------------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray, validation_data: tuple | None = None) -> Classifier:
        """Train from scratch on ``X, y`` (and report ``validation_data = (X_val, y_val)`` each epoch)."""
        X = self._inputs(X)
        y = np.asarray(y)
        if len(X) != len(y) or len(X) == 0:
            raise ConfigError(f"X and y must be non-empty and of equal length, got {len(X)} and {len(y)}")
        self.classes_ = np.unique(y)
        if len(self.classes_) > 256:
            raise ConfigError("at most 256 classes")
        labels = self._encode(y)
        val = None
        if validation_data is not None:
            val = (self._inputs(validation_data[0]), self._encode(np.asarray(validation_data[1])))
        trainer = build_trainer(self.config, (X, labels), val, kernels=self.kernels,
                                callbacks=[ProgressBar(tty=False)] if self.verbose else [])
        out = trainer.model.output_shapes()[-1]
        if out != (len(self.classes_),) and out[0] < len(self.classes_):
            raise ConfigError(f"the network has {out[0]} outputs but y has {len(self.classes_)} classes")
        self.model = trainer.model  # with the fast kernels, the object speed_up returned
        self.history = trainer.run()
        return self

    def _check_fitted(self) -> None:
        if self.model is None:
            raise ConfigError("this Classifier is not fitted yet: call fit(X, y) or Classifier.load(path)")

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """float32 ``[N, K]`` class probabilities (columns in the order of ``classes_``)."""
        self._check_fitted()
        return self.model.predict_proba(self._features(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted labels ``[N]`` (values from ``classes_``)."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Accuracy on ``X, y``."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def evaluate(self, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        """Keras-style: ``{"loss": ..., "accuracy": ...}`` with the training loss function."""
        self._check_fitted()
        data = (self._inputs(X), self._encode(np.asarray(y)))
        loss, acc = evaluate(self.model, build_loss(self.config), data)
        return {"loss": loss, "accuracy": acc}

    def summary(self) -> str:
        self._check_fitted()
        return self.model.summary()

    def save(self, path: str | Path) -> Path:
        """Write a model file that ``digitnet predict``/``serve`` and :meth:`load` read."""
        from digitnet.io import save_model

        self._check_fitted()
        return save_model(path, self.model, classes=[str(c) for c in self.classes_],
                          training=self.config.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Classifier:
        """A fitted Classifier from a model file or run directory."""
        from digitnet.io import load_model

        loaded = load_model(path)
        training = {k: v for k, v in loaded.training.items() if k in TrainConfig.__dataclass_fields__}
        clf = cls.__new__(cls)
        clf.config = TrainConfig.from_dict(training) if training else TrainConfig()
        clf.verbose = False
        clf.kernels = None
        clf.model = loaded.model
        clf.history = None
        names = loaded.classes
        clf.classes_ = (np.array([int(c) for c in names]) if all(c.lstrip("-").isdigit() for c in names)
                        else np.array(names))
        return clf
