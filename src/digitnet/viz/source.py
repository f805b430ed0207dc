"""What a picture is made from: a model file or a run directory, and the test data to show it on.

A run directory (written by ``digitnet train --out RUN_DIR``) holds model.safetensors,
initial.safetensors, history.json and config.json; a bare model file has only the first. The
pictures that need the rest (learning curves, gradient norms, weights before/after) ask for it
through :class:`PlotSource`, which raises a clear :class:`~digitnet.errors.ConfigError` when it is
missing. Everything is loaded on first use and kept, so a report computes each thing once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from digitnet.errors import ConfigError

MODEL_FILE = "model.safetensors"
INITIAL_FILE = "initial.safetensors"
HISTORY_FILE = "history.json"
CONFIG_FILE = "config.json"


class PlotSource:
    """A trained model plus whatever its run directory and test data can add.

    Args:
        loaded: a :class:`digitnet.io.LoadedModel`.
        run_dir: the run directory, or None for a bare model file.
        dataset: dataset name for the test images; default: config.json's, else the model's, else mnist.
        data_dir: folder with the dataset files (default: config.json's, else the usual search).
        test: a ready test Dataset to use instead of loading one (tests, notebooks).
    """

    def __init__(self, loaded, run_dir: Path | None = None, *, dataset: str | None = None,
                 data_dir: str | None = None, test=None) -> None:
        self.loaded = loaded
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._dataset = dataset
        self._data_dir = data_dir
        self._test = test
        self._cache: dict[str, Any] = {}

    @classmethod
    def open(cls, path: str | Path, *, dataset: str | None = None, data_dir: str | None = None,
             test=None) -> PlotSource:
        """A run directory (with model.safetensors) or a model file."""
        from digitnet.io import load_model

        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path} does not exist (give a run directory or a .safetensors model file)")
        loaded = load_model(path)
        return cls(loaded, path if path.is_dir() else None, dataset=dataset, data_dir=data_dir, test=test)

    # -- the model ------------------------------------------------------------------------------
    @property
    def model(self):
        return self.loaded.model

    @property
    def classes(self) -> list[str]:
        return self.loaded.classes

    @property
    def name(self) -> str:
        return str(self.run_dir or self.loaded.path)

    # -- the run directory ------------------------------------------------------------------------
    def _run_file(self, filename: str, what: str) -> Path:
        if self.run_dir is None:
            raise ConfigError(f"{what} needs a run directory (with {filename}), but {self.loaded.path} is a "
                              f"model file; pass the folder written by 'digitnet train --out RUN_DIR'")
        path = self.run_dir / filename
        if not path.exists():
            raise ConfigError(f"{what} needs {filename}, which {self.run_dir} does not have")
        return path

    def has(self, filename: str) -> bool:
        return self.run_dir is not None and (self.run_dir / filename).exists()

    def history(self, what: str = "this picture"):
        from digitnet.training import History

        if "history" not in self._cache:
            self._cache["history"] = History.load(self._run_file(HISTORY_FILE, what))
        history = self._cache["history"]
        if len(history) == 0:
            raise ConfigError(f"{what}: {self.run_dir / HISTORY_FILE} has no finished epoch yet")
        return history

    def initial_state(self, what: str = "this picture") -> dict:
        from digitnet.io import load_model

        if "initial" not in self._cache:
            initial = load_model(self._run_file(INITIAL_FILE, what), what="initial weights file")
            self._cache["initial"] = initial.model.state_dict()
        return self._cache["initial"]

    @property
    def config(self) -> dict[str, Any]:
        """config.json of the run ({} for a model file), falling back to the model's training metadata."""
        if "config" not in self._cache:
            config: dict[str, Any] = {}
            if self.has(CONFIG_FILE):
                try:
                    config = json.loads((self.run_dir / CONFIG_FILE).read_text())
                except json.JSONDecodeError:
                    raise ConfigError(f"{self.run_dir / CONFIG_FILE} is not valid JSON") from None
                if not isinstance(config, dict):
                    raise ConfigError(f"{self.run_dir / CONFIG_FILE} is not a JSON object")
            else:
                config = dict(self.loaded.training or {})
            self._cache["config"] = config
        return self._cache["config"]

    # -- the test data ----------------------------------------------------------------------------
    @property
    def dataset_name(self) -> str:
        return self._dataset or self.config.get("dataset") or self.loaded.dataset or "mnist"

    def test_data(self):
        """The labelled test split the pictures are drawn on (loaded once)."""
        if self._test is None:
            from digitnet.data.datasets import load_dataset

            data_dir = self._data_dir or self.config.get("data_dir")
            self._test = load_dataset(self.dataset_name, split="test", data_dir=data_dir)
        data = self._test
        if data.labels is None:
            raise ConfigError(f"{data.name} has no labels: the pictures need labelled test data")
        if len(data.classes) != len(self.classes):
            raise ConfigError(f"the model has {len(self.classes)} classes but {data.name} has "
                              f"{len(data.classes)}")
        return data

    def predictions(self):
        """:class:`digitnet.analysis.Predictions` of the model on the whole test split (cached)."""
        from digitnet.analysis import predict

        if "predictions" not in self._cache:
            data = self.test_data()
            self._cache["predictions"] = predict(self.model, data.images, data.labels)
        return self._cache["predictions"]

    def cached(self, key: str, compute):
        """``compute()`` once per source (robustness curves, metrics, ...)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]
