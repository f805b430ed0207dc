"""A scikit-learn estimator: ``Classifier(hidden_layer_sizes=(128, 64), ...).fit(X, y).predict(X)``.

Like scikit-learn's ``MLPClassifier``, the hidden layers are given and the input and output sizes come
from the data at ``fit``: ``X`` has any number of features (``[N, F]``; image arrays ``[N, 28, 28]``
are flattened) and ``y`` any set of labels, which become ``classes_``. uint8 ``X`` is read as images
(0-255, scaled by 1/255 batch by batch); any other numeric ``X`` is used as it is (as float32).

Every setting is an explicit keyword argument stored unchanged, so ``get_params``, ``set_params`` and
``sklearn.base.clone`` work and the estimator fits in ``GridSearchCV``, ``cross_val_score`` and
``Pipeline`` (scikit-learn is not needed to use it). A setting left at None takes its value from
``preset`` if one is given, else from :class:`~digitnet.config.TrainConfig`'s defaults; every value is
checked at ``fit`` by TrainConfig, as ``digitnet train`` checks its flags.

    >>> from digitnet import Classifier
    >>> clf = Classifier((128, 64), optimizer="adam", lr=1e-3, epochs=5, seed=0).fit(x_train, y_train)
    >>> clf.score(x_test, y_test)
    0.97...
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from digitnet.config import (
    TrainConfig,
    build_augment,
    build_loss,
    build_optimizer,
    load_preset,
    seed_generators,
)
from digitnet.errors import ConfigError

#: The TrainConfig fields a Classifier takes as keyword arguments (its data and file settings do not
#: apply: the data is X and y, and the architecture is hidden_layer_sizes or the preset's layers).
SETTINGS = ("activation", "output_activation", "init", "dropout", "loss", "label_smoothing", "loss_reduction",
            "optimizer", "lr", "momentum", "weight_decay", "epochs", "batch_size", "schedule", "warmup_epochs",
            "step_size", "gamma", "min_lr", "clip_norm", "val_split", "early_stopping", "augment",
            "on_divergence", "seed")


class InputError(ConfigError, ValueError):
    """X or y cannot be used (scikit-learn expects a ValueError; digitnet's CLI a ConfigError)."""


class InputTypeError(ConfigError, TypeError):
    """X holds something that is not a number."""


class NotFittedError(ConfigError, ValueError, AttributeError):
    """The Classifier is used before ``fit`` (a ValueError and an AttributeError, as scikit-learn's)."""


def _sklearn(name: str):
    """``sklearn.exceptions.<name>`` if scikit-learn is already imported (it is when it calls us), else None:
    digitnet's own errors then also are scikit-learn's, without importing scikit-learn for them."""
    module = sys.modules.get("sklearn.exceptions")
    return getattr(module, name, None)


@functools.cache
def _not_fitted_class(sklearn_class: type | None) -> type:
    if sklearn_class is None:
        return NotFittedError
    return type("NotFittedError", (NotFittedError, sklearn_class), {"__module__": __name__})


class Classifier:
    """A neural-network classifier with ``fit``, ``partial_fit``, ``predict``, ``predict_proba``, ``score``.

    Args:
        hidden_layer_sizes: the hidden layers, e.g. ``(128, 64)`` or ``32``; ``()`` is softmax regression.
            None: the preset's architecture (its hidden sizes for an MLP, its layers for a CNN), else
            ``(128, 64)``.
        preset: a named preset (``digitnet train --help`` lists them) for every setting left at None.
        activation, optimizer, lr, epochs, batch_size, ...: any setting of
            :class:`~digitnet.config.TrainConfig` in :data:`SETTINGS`, as ``digitnet train`` takes them
            (``weight_decay`` is ``--l2``). ``val_split`` holds out that fraction of ``X`` (stratified)
            for the validation curves and ``early_stopping``; ``seed`` makes ``fit`` deterministic.
        kernels: "fast" or "reference" (the textbook layers of digitnet.nn); None reads
            ``$DIGITNET_KERNELS``, else fast. How the network computes, not what it is.
        threads: how many threads the kernels run on; None reads ``$DIGITNET_THREADS``, else every
            core. The fitted weights are the same for any count (with the fast kernels).
        verbose: print one line per epoch.

    Attributes after ``fit``: ``classes_``, ``n_features_in_``, ``config_`` (the resolved TrainConfig),
    ``model_`` (the trained :class:`~digitnet.nn.Sequential`) and ``history_``.
    """

    def __init__(self, hidden_layer_sizes: tuple[int, ...] | int | None = None, *, preset: str | None = None,
                 activation: str | None = None, output_activation: str | None = None, init: str | None = None,
                 dropout: float | None = None, loss: str | None = None, label_smoothing: float | None = None,
                 loss_reduction: str | None = None, optimizer: str | None = None, lr: float | None = None,
                 momentum: float | None = None, weight_decay: float | None = None, epochs: int | None = None,
                 batch_size: int | None = None, schedule: str | None = None, warmup_epochs: float | None = None,
                 step_size: float | None = None, gamma: float | None = None, min_lr: float | None = None,
                 clip_norm: float | None = None, val_split: float | None = None,
                 early_stopping: int | None = None, augment: dict | None = None, on_divergence: str | None = None,
                 seed: int | None = None, kernels: str | None = None, threads: int | None = None,
                 verbose: bool = False) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.preset = preset
        self.activation = activation
        self.output_activation = output_activation
        self.init = init
        self.dropout = dropout
        self.loss = loss
        self.label_smoothing = label_smoothing
        self.loss_reduction = loss_reduction
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.schedule = schedule
        self.warmup_epochs = warmup_epochs
        self.step_size = step_size
        self.gamma = gamma
        self.min_lr = min_lr
        self.clip_norm = clip_norm
        self.val_split = val_split
        self.early_stopping = early_stopping
        self.augment = augment
        self.on_divergence = on_divergence
        self.seed = seed
        self.kernels = kernels
        self.threads = threads
        self.verbose = verbose

    # -- scikit-learn's estimator protocol ---------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Every constructor argument as it was given (``deep`` is accepted for scikit-learn)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Classifier:
        """Change constructor arguments (checked at the next ``fit``, as scikit-learn does)."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for Classifier; valid parameters: {', '.join(valid)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if v is not defaults.get(k)
                   and not (isinstance(v, int | float | str) and v == defaults.get(k))]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags(), input_tags=InputTags(three_d_array=True))

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    _estimator_type = "classifier"  # scikit-learn before 1.6 read this instead of the tags

    # -- settings ------------------------------------------------------------------------------------
    @property
    def config(self) -> TrainConfig:
        """The TrainConfig these arguments describe (before the data fixes the input and output sizes)."""
        base = load_preset(self.preset) if self.preset else TrainConfig()
        changes = {name: getattr(self, name) for name in SETTINGS if getattr(self, name) is not None}
        if self.hidden_layer_sizes is not None:
            hidden = self._hidden_sizes()
            changes.update(arch="-".join(map(str, [784, *hidden, 10])), layers=None)
        return TrainConfig.from_dict({**base.to_dict(), **changes})

    def _hidden_sizes(self) -> list[int]:
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, str):
            parts = sizes.split("-")
            hint = f" (did you mean {tuple(int(p) for p in parts[1:-1])}?)" if len(parts) > 2 and \
                all(p.isdigit() for p in parts) else ""
            raise ConfigError(f"hidden_layer_sizes are the hidden layers only, e.g. (128, 64): the input and "
                              f"output sizes come from X and y; got {sizes!r}{hint}")
        sizes = [sizes] if isinstance(sizes, int | np.integer) else list(sizes)
        if not all(isinstance(s, int | np.integer) and not isinstance(s, bool) and s >= 1 for s in sizes):
            raise ConfigError(f"hidden_layer_sizes must be positive whole numbers, e.g. (128, 64); got "
                              f"{self.hidden_layer_sizes!r}")
        return [int(s) for s in sizes]

    def _fit_config(self, n_features: int, n_classes: int) -> TrainConfig:
        """The config with the input size of X and one output per class."""
        config = self.config
        if config.layers is None:
            hidden = config.arch.split("-")[1:-1] if self.hidden_layer_sizes is None else \
                list(map(str, self._hidden_sizes()))
            return config.replace(arch="-".join([str(n_features), *hidden, str(n_classes)]))
        shape = config.input_shape or [1, 28, 28]
        if math.prod(shape) != n_features:
            raise InputError(f"the preset's network reads {'x'.join(map(str, shape))} inputs but X has "
                             f"{n_features} features; give hidden_layer_sizes for an MLP on these features")
        layers = [dict(layer) for layer in config.layers]
        last = max((i for i, layer in enumerate(layers) if "out_features" in layer), default=None)
        if last is None:
            raise ConfigError("the preset's layers have no Dense output layer to size to the classes")
        layers[last]["out_features"] = n_classes
        return TrainConfig.from_dict({**config.to_dict(), "layers": layers, "input_shape": list(shape)})

    # -- checking X and y ----------------------------------------------------------------------------
    def _check_X(self, X: Any, reset: bool) -> np.ndarray:
        """X as ``[N, F]``: uint8 kept (images), anything else float32; ValueErrors as scikit-learn words them."""
        if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
            raise InputError("sparse input is not supported: pass a dense array (X.toarray())")
        X = np.asarray(X)
        if X.dtype.kind == "O":
            try:
                X = X.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise InputTypeError(f"X must be numeric: {exc}") from None
        if X.dtype.kind == "c":
            raise InputError("Complex data not supported")
        if X.dtype.kind not in "fiub":
            raise InputError(f"X must be numeric, got dtype {X.dtype}")
        if X.ndim < 2:
            raise InputError(f"Expected 2D array, got {X.ndim}D array instead. Reshape your data either using "
                             f"X.reshape(-1, 1) if your data has a single feature or X.reshape(1, -1) if it "
                             f"contains a single sample.")
        X = X.reshape(len(X), -1)
        if X.shape[0] == 0:
            raise InputError(f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is required.")
        if X.shape[1] == 0:
            raise InputError(f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
        if X.dtype != np.uint8:
            X = X.astype(np.float32)
            if not np.all(np.isfinite(X)):
                kind = "NaN" if np.isnan(X).any() else "infinity or a value too large for float32"
                raise InputError(f"Input X contains {kind}.")
        if reset:
            self.n_features_in_ = X.shape[1]
        elif X.shape[1] != self.n_features_in_:
            raise InputError(f"X has {X.shape[1]} features, but Classifier is expecting {self.n_features_in_} "
                             f"features as input.")
        return X

    @staticmethod
    def _check_y(y: Any, n: int) -> np.ndarray:
        if y is None:
            raise InputError("Classifier requires y to be passed, but the target y is None")
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected. Please change the shape "
                          "of y to (n_samples,), for example using ravel().",
                          _sklearn("DataConversionWarning") or UserWarning, stacklevel=3)
            y = y.ravel()
        if y.ndim != 1:
            raise InputError(f"y must be one label per sample, got shape {y.shape}")
        if len(y) != n:
            raise InputError(f"X and y have different lengths: {n} and {len(y)}")
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)):
                raise InputError("Input y contains NaN or infinity.")
            if np.any(y != np.round(y)):
                raise InputError("Unknown label type: continuous. A classifier needs class labels; y holds "
                                 "fractional numbers")
        elif y.dtype.kind not in "iubUSO":
            raise InputError(f"Unknown label type: y of dtype {y.dtype}")
        return y

    def _encode(self, y: np.ndarray) -> np.ndarray:
        index = np.searchsorted(self.classes_, y)
        clipped = np.minimum(index, len(self.classes_) - 1)
        if np.any(index >= len(self.classes_)) or np.any(self.classes_[clipped] != y):
            raise InputError("y holds labels that are not in classes_ (those seen in fit)")
        return index.astype(np.uint8 if len(self.classes_) <= 256 else np.uint32)

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            error = _not_fitted_class(_sklearn("NotFittedError"))
            raise error("This Classifier instance is not fitted yet: call fit(X, y) (or Classifier.load) before "
                        "using this estimator.")

    # -- training ------------------------------------------------------------------------------------
    def _start(self, X: np.ndarray, classes: np.ndarray) -> TrainConfig:
        """Reset the fitted state for data with these features and classes; returns the config to train."""
        from digitnet.kernels import resolve, resolve_threads

        resolve(self.kernels)  # a bad choice fails before training
        resolve_threads(self.threads)
        if len(classes) < 2:
            raise InputError(f"y has only one class ({classes[0]!r}): a classifier needs at least two classes")
        self.classes_ = classes
        self._check_X(X, reset=True)
        config = self._fit_config(self.n_features_in_, len(classes))
        self.config_ = config
        self._partial = None
        return config

    def fit(self, X: Any, y: Any, validation_data: tuple | None = None) -> Classifier:
        """Train from scratch on ``X, y`` (reporting ``validation_data = (X_val, y_val)`` after each epoch,
        or the ``val_split`` held out of X)."""
        from digitnet.training import EarlyStopping, ProgressBar, build_trainer

        X = self._check_X(X, reset=True)
        y = self._check_y(y, len(X))
        config = self._start(X, np.unique(y))
        labels = self._encode(y)
        train, val = (X, labels), None
        if validation_data is not None:
            X_val = self._check_X(validation_data[0], reset=False)
            val = (X_val, self._encode(self._check_y(validation_data[1], len(X_val))))
        elif config.val_split > 0:
            train, val = self._split(X, labels, config)
        callbacks: list = [ProgressBar(tty=False)] if self.verbose else []
        if config.early_stopping:
            if val is None:
                raise ConfigError("early_stopping needs validation data: set val_split or pass validation_data")
            callbacks.insert(0, EarlyStopping(patience=config.early_stopping))
        trainer = build_trainer(config, train, val, kernels=self.kernels, callbacks=callbacks,
                                log=None if self.verbose else (lambda message: None), threads=self.threads)
        self.model_ = trainer.model  # with the fast kernels, the object speed_up returned
        self.history_ = trainer.run()
        self._partial = (trainer.loss_fn, trainer.optimizer, trainer.rng)
        return self

    @staticmethod
    def _split(X: np.ndarray, labels: np.ndarray, config: TrainConfig):
        """A stratified hold-out of ``val_split`` of the rows, drawn from the seed's split generator."""
        from digitnet.config import seed_generators

        rng = seed_generators(config.seed)["split"]
        val_rows = []
        for label in np.unique(labels):
            rows = np.flatnonzero(labels == label)
            take = int(round(len(rows) * config.val_split))
            val_rows.append(rng.permutation(rows)[:take])
        val_idx = np.sort(np.concatenate(val_rows))
        if len(val_idx) == 0 or len(val_idx) == len(X):
            raise ConfigError(f"val_split {config.val_split} of {len(X)} samples leaves no validation or no "
                              f"training data")
        keep = np.ones(len(X), bool)
        keep[val_idx] = False
        return (X[keep], labels[keep]), (X[val_idx], labels[val_idx])

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> Classifier:
        """One epoch over ``X, y``, continuing the network (and the optimizer's state) of the last
        ``fit`` or ``partial_fit``.

        The first call on an unfitted Classifier needs ``classes`` (every label that will ever appear),
        as in scikit-learn, and starts a new network. The learning rate is ``lr``, constant (schedules
        and warm-up apply to ``fit``).
        """
        from digitnet.kernels import resolve_threads
        from digitnet.kernels.threads import training_context
        from digitnet.training import Trainer

        first = not hasattr(self, "model_")
        if first and classes is None:
            raise InputError("the first call to partial_fit needs classes=: every label y will ever hold")
        X = self._check_X(X, reset=first)
        y = self._check_y(y, len(X))
        if first:
            self._start(X, np.unique(self._check_y(classes, len(np.asarray(classes)))))
        elif classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
            raise InputError(f"classes {np.unique(np.asarray(classes))} differ from those of the first "
                             f"fit {self.classes_}")
        loss_fn, optimizer, rng = self._partial_parts()
        config, model = self.config_, self.model_
        optimizer.lr = config.lr
        batch = min(config.batch_size or len(X), len(X))
        trainer = Trainer(model, loss_fn, optimizer, (X, self._encode(y)), epochs=1, batch_size=batch, rng=rng,
                          augment=build_augment(config), clip_norm=config.clip_norm,
                          on_divergence=config.on_divergence, log=lambda message: None,
                          epoch_context=lambda: training_context(model, batch, resolve_threads(self.threads)))
        history = trainer.run()
        if first or getattr(self, "history_", None) is None:
            self.history_ = history
        else:
            for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"):
                getattr(self.history_, name).extend(getattr(history, name))
            self.history_.epoch.append(len(self.history_.epoch))
        return self

    def _partial_parts(self):
        """(loss, optimizer, data generator) that partial_fit continues with: those of the last fit, or
        new ones (a new network; an unpickled or loaded Classifier)."""
        from digitnet import kernels as engine
        from digitnet.training.build import build_parts

        if getattr(self, "_partial", None) is None:
            config = self.config_
            rngs = seed_generators(config.seed)
            if not hasattr(self, "model_"):
                parts = build_parts(config, rngs)
                model, loss_fn, optimizer = parts.model, parts.loss, parts.optimizer
                if engine.resolve(self.kernels) == "fast":
                    model, loss_fn, optimizer = engine.speed_up(model, loss_fn, optimizer, threads=self.threads)
                self.model_ = model
            else:
                loss_fn, optimizer = build_loss(config), build_optimizer(config)
                if engine.resolve(self.kernels) == "fast":
                    _, loss_fn, optimizer = engine.speed_up(None, loss_fn, optimizer, threads=self.threads)
            self._partial = (loss_fn, optimizer, rngs["data"])
        return self._partial

    # -- using it ------------------------------------------------------------------------------------
    def _features(self, X: Any) -> np.ndarray:
        X = self._check_X(X, reset=False)
        shape = (len(X), *self.model_.input_shape)
        if X.dtype == np.uint8:
            return (X.reshape(shape) * np.float32(1 / 255)).astype(np.float32)
        return X.reshape(shape)

    def predict_proba(self, X: Any) -> np.ndarray:
        """float32 ``[N, K]`` class probabilities, columns in the order of ``classes_``."""
        self._check_fitted()
        return self.model_.predict_proba(self._features(X))

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels ``[N]`` (values from ``classes_``)."""
        self._check_fitted()
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy on ``X, y`` (weighted by ``sample_weight`` if given)."""
        correct = self.predict(X) == np.asarray(y).ravel()
        return float(np.average(correct, weights=sample_weight))

    def evaluate(self, X: Any, y: Any) -> dict[str, Any]:
        """Keras-style: ``{"loss": ..., "accuracy": ...}`` with the training loss function."""
        from digitnet.training import evaluate

        self._check_fitted()
        X = self._check_X(X, reset=False)
        loss, acc = evaluate(self.model_, build_loss(self.config_), (X, self._encode(self._check_y(y, len(X)))))
        return {"loss": loss, "accuracy": acc}

    @property
    def model(self):
        """The trained network (``model_``)."""
        self._check_fitted()
        return self.model_

    @property
    def history(self):
        """The per-epoch record of the last ``fit`` (``history_``)."""
        return getattr(self, "history_", None)

    def summary(self) -> str:
        self._check_fitted()
        return self.model_.summary()

    # -- files and pickling --------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write a model file that ``digitnet predict``/``serve`` and :meth:`load` read."""
        from digitnet.io import save_model

        self._check_fitted()
        return save_model(path, self.model_, classes=[str(c) for c in self.classes_],
                          training=self.config_.to_dict(), extra_meta={"n_features_in": self.n_features_in_})

    @classmethod
    def load(cls, path: str | Path, kernels: str | None = None) -> Classifier:
        """A fitted Classifier from a model file or run directory (its settings from the file's metadata)."""
        from digitnet.io import load_model

        loaded = load_model(path, kernels=kernels)
        training = {k: v for k, v in loaded.training.items() if k in TrainConfig.__dataclass_fields__}
        config = TrainConfig.from_dict(training) if training else TrainConfig()
        clf = cls(**{name: getattr(config, name) for name in SETTINGS}, kernels=kernels)
        clf.config_ = config
        clf.model_ = loaded.model
        clf.n_features_in_ = int(loaded.metadata.get("n_features_in") or math.prod(loaded.model.input_shape))
        names = loaded.classes
        clf.classes_ = (np.array([int(c) for c in names]) if all(c.lstrip("-").isdigit() for c in names)
                        else np.array(names))
        clf._partial = None
        return clf

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the network as its architecture and weights (not the kernels' work buffers); the
        partial_fit state (optimizer moments) is not kept."""
        state = dict(self.__dict__)
        state.pop("_partial", None)
        model = state.pop("model_", None)
        if model is not None:
            state["_model_state"] = (model.config(), {k: v.copy() for k, v in model.state_dict().items()})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        saved = state.pop("_model_state", None)
        state.setdefault("threads", None)             # pickled before the setting existed
        self.__dict__.update(state)
        if saved is not None:
            from digitnet.kernels import resolve, speed_up
            from digitnet.nn.sequential import Sequential

            architecture, weights = saved
            model = Sequential.from_config(architecture)
            model.load_state_dict(weights)
            self.model_ = speed_up(model, threads=self.threads)[0] if resolve(self.kernels) == "fast" else model
