"""The sweep picture, drawn from a sweep directory made here (results and histories, no training)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from digitnet.errors import ConfigError
from digitnet.viz import png_bytes
from digitnet.viz.kinds import SWEEP_KINDS, render_sweep
from tests.viz.support import assert_drawn, figure_texts, open_png


def fake_sweep(folder, grid=None, random=None, seeds=3, val=True, diverged=()):
    """A sweep directory as `digitnet sweep` writes it: sweep.json, results.json and runs/*/history.json."""
    grid = grid if grid is not None else {"optimizer": ["sgd", "momentum", "adam"], "lr": [0.01, 0.1]}
    random = random or {}
    keys = [*grid, *random]
    rng = np.random.default_rng(0)
    combos = [{}]
    for key, values in grid.items():
        combos = [{**c, key: v} for c in combos for v in values]
    draws = [{k: float(rng.uniform(r["low"], r["high"])) for k, r in random.items()} for _ in range(4)] \
        if random else [None]
    rows = []
    for i, combo in enumerate(combos):
        for d, drawn in enumerate(draws):
            for s in range(seeds):
                name = "_".join(f"{k}={v}" for k, v in combo.items()) + (f"_r{d:03d}" if drawn else "") + f"_s{s}"
                level = 0.6 + 0.05 * i + 0.01 * s
                epochs = 4
                history = {"epoch": list(range(epochs)),
                           "train_loss": [1.0 / (e + 1 + i) for e in range(epochs)],
                           "train_accuracy": [level - 0.1 + 0.02 * e for e in range(epochs)],
                           "val_loss": [None] * epochs if not val else [1.0 / (e + 1) for e in range(epochs)],
                           "val_accuracy": [None] * epochs if not val else [level - 0.05 + 0.02 * e
                                                                            for e in range(epochs)],
                           "lr": [0.1] * epochs, "seconds": [1.0] * epochs}
                run = folder / "runs" / name
                run.mkdir(parents=True)
                (run / "history.json").write_text(json.dumps(history))
                status = "diverged" if name in diverged else "ok"
                rows.append({"trial": name, **combo, **(drawn or {}), **({"draw": d} if drawn else {}),
                             "repeat": s, "seed": 100 + s, "status": status,
                             "test_accuracy": level if status == "ok" else None, "seconds": 2.0,
                             "run_dir": f"runs/{name}", "command": f"digitnet train --seed {100 + s}"})
    (folder / "sweep.json").write_text(json.dumps({"base": {"preset": "seed-002"}, "grid": grid, "random": random,
                                                   "keys": keys, "seeds": list(range(seeds)),
                                                   "trial_count": len(rows)}))
    (folder / "results.json").write_text(json.dumps(rows))
    return folder


def test_grid_picture_has_accuracy_panels_and_curves_per_setting(tmp_path):
    fig = render_sweep(fake_sweep(tmp_path))
    texts = figure_texts(fig)
    assert "Test accuracy by optimizer" in texts and "Test accuracy by lr" in texts
    for optimizer in ("sgd", "momentum", "adam"):
        assert f"Validation accuracy: optimizer={optimizer}" in texts
    assert "lr=0.01 (3 seeds)" in texts and "optimizer=momentum" in texts
    assert any(t.startswith("Sweep ") and "18 trials" in t for t in texts)
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["sgd", "momentum", "adam"]  # in the order the grid listed them
    image = open_png(png_bytes(fig))
    assert_drawn(image)


def test_without_validation_the_curves_are_training_loss(tmp_path):
    fig = render_sweep(fake_sweep(tmp_path, grid={"lr": [0.01, 0.05, 0.1]}, val=False, diverged={"lr=0.1_s2"}))
    texts = figure_texts(fig)
    assert "Training loss per epoch" in texts
    assert any("8 trials, 1 diverged" in t for t in texts)
    assert_drawn(open_png(png_bytes(fig)))


def test_random_search_picture(tmp_path):
    folder = fake_sweep(tmp_path, grid={"optimizer": ["sgd", "adam"]},
                        random={"lr": {"low": 0.001, "high": 0.3, "log": True}}, seeds=2)
    fig = render_sweep(folder)
    assert "Test accuracy by lr" in figure_texts(fig)
    assert_drawn(open_png(png_bytes(fig)))


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="not a sweep directory"):
        render_sweep(tmp_path)
    (tmp_path / "sweep.json").write_text(json.dumps({"keys": []}))
    with pytest.raises(ConfigError, match="no finished trial"):
        render_sweep(tmp_path)
    assert set(SWEEP_KINDS) == {"sweep"}


def test_sweep_report_embeds_the_picture_and_writes_it(tmp_path):
    from digitnet.report import write_report

    folder = fake_sweep(tmp_path / "s")
    path = write_report(folder)
    assert path == folder / "report.html"
    text = path.read_text()
    assert "digitnet sweep: s" in text and "data:image/png;base64," in text
    assert "Settings by mean test accuracy" in text and "optimizer=adam, lr=0.1" in text
    assert "digitnet train --seed 100" in text
    open_png(folder / "sweep.png")
