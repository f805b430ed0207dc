"""The live-training API with FastAPI's TestClient: start, watch, pause, resume, change lr, stop, 409s."""

from __future__ import annotations

import base64
import io
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from digitnet.data.batches import images_to_inputs
from tests.conftest import require_module
from tests.web.support import mnist_split

SMALL = {"hidden": "32", "epochs": 3, "limit_train": 3000, "batch_size": 32, "optimizer": "momentum", "lr": 0.05}
#: a job slowed down so that a test can act on it while it runs (it is stopped long before its end)
SLOW = {**SMALL, "epochs": 50, "step_delay_ms": 20}


@pytest.fixture
def client(loaded_model, mnist_path):
    require_module("fastapi")
    require_module("httpx")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*httpx2.*")
        from fastapi.testclient import TestClient
    from digitnet.web.server import create_app

    app = create_app(loaded_model)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        test_client.manager = app.state.training
        yield test_client
        manager = app.state.training
        if manager.job is not None and manager.job.state in ("loading", "running", "paused", "stopping"):
            manager.stop()
        assert manager.wait(timeout=120), "the training thread did not end"


def wait_for(client, predicate, what: str, limit_seconds: float = 180) -> dict:
    """Poll the status until ``predicate(status)``; fail (not time out silently) if it never holds."""
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        status = client.get("/api/train/status").json()
        if predicate(status):
            return status
        time.sleep(0.05)
    pytest.fail(f"the training job never reached: {what} (last status: {status['state']}, {status['message']})")


def decode_png(data_url: str) -> Image.Image:
    assert data_url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))


@pytest.mark.slow
def test_a_job_trains_to_the_end_and_the_draw_tab_then_uses_its_model(client, tmp_path):
    assert client.get("/api/train/status").json()["state"] == "idle"
    response = client.post("/api/train/start", json=SMALL)
    assert response.status_code == 202
    started = response.json()
    assert started["state"] in ("loading", "running") and started["job"] == 1
    assert started["settings"]["arch"] == "784-32-10" and started["epochs"] == 3
    status = wait_for(client, lambda s: s["state"] == "finished", "finished")

    assert status["train_images"] == 2700 and status["val_images"] == 300 and status["progress"] == 1.0
    assert status["num_params"] == 784 * 32 + 32 + 32 * 10 + 10
    assert [row["epoch"] for row in status["epochs_log"]] == [1, 2, 3]
    assert all(row["val_accuracy"] is not None for row in status["epochs_log"])
    # the curve: ~25 points an epoch, in order, loss falling from ln(10)
    points = status["points"]
    assert status["points_total"] == len(points) >= 3 * 25
    assert np.all(np.diff([p["epoch"] for p in points]) > 0) and points[-1]["epoch"] == pytest.approx(3.0)
    assert points[0]["loss"] > 1.5 and np.mean([p["loss"] for p in points[-10:]]) < 0.5
    assert all(p["lr"] == pytest.approx(0.05) for p in points)
    # only the new points are sent again
    later = client.get("/api/train/status", params={"since": len(points) - 2}).json()
    assert later["points"] == points[-2:]
    # the weights picture: 32 tiles of 28x28 in rows of 8, twice enlarged; its change since the start too
    assert decode_png(status["weights"]).size == ((8 * 29 - 1) * 2, (4 * 29 - 1) * 2)
    assert decode_png(status["weights_change"]).size == ((8 * 29 - 1) * 2, (4 * 29 - 1) * 2)
    assert client.get("/api/train/status", params={"weights": status["weights_version"]}).json()["weights"] is None

    # evaluated on the real test set, then swapped in for the Draw tab and /api/model
    assert status["model_ready"] and status["test_accuracy"] > 0.85
    manager_model = client.manager.last_model.model
    info = client.get("/api/model").json()
    assert info["name"] == "trained on this page" and info["num_params"] == status["num_params"]
    assert info["metrics"]["test_accuracy"] == pytest.approx(status["test_accuracy"])
    images, labels = mnist_split("test")
    answer = client.post("/api/predict", json={"pixels": images[0].tolist()}).json()
    expected = manager_model.predict_proba(images_to_inputs(images[:1], (784,)))[0]
    np.testing.assert_allclose(answer["probabilities"], expected, rtol=1e-5, atol=1e-7)
    assert len(answer["activations"][0]["values"]) == 32

    # and it can be downloaded as a model file digitnet loads
    download = client.get("/api/train/model")
    assert download.status_code == 200
    file = tmp_path / "trained-here.safetensors"
    file.write_bytes(download.content)
    from digitnet.io import load_model

    reloaded = load_model(file)
    assert reloaded.metrics["test_accuracy"] == pytest.approx(status["test_accuracy"])
    np.testing.assert_array_equal(reloaded.model.layers[0].params["weights"], manager_model.layers[0].params["weights"])


@pytest.mark.slow
def test_the_page_trains_exactly_like_digitnet_train(client, tmp_path):
    """Same config, same seed: the same weights as the CLI's run_training."""
    from digitnet.runs import run_training
    from digitnet.web.training import settings_to_config

    settings = {"hidden": "16", "epochs": 1, "limit_train": 1000, "batch_size": 50, "optimizer": "adam",
                "lr": 0.003, "val_split": 0.1, "seed": 7}
    assert client.post("/api/train/start", json=settings).status_code == 202
    wait_for(client, lambda s: s["state"] == "finished", "finished")
    config, _ = settings_to_config(settings)
    result = run_training(config, tmp_path / "run", quiet=True, log=lambda message: None)
    page_model = client.manager.last_model.model
    for name, value in result.model.state_dict().items():
        np.testing.assert_allclose(page_model.state_dict()[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_one_job_at_a_time_and_stop_keeps_the_model(client):
    assert client.post("/api/train/start", json=SLOW).status_code == 202
    wait_for(client, lambda s: s["points_total"] >= 2, "two points")
    second = client.post("/api/train/start", json=SMALL)
    assert second.status_code == 409
    assert "already" in second.json()["error"] and "one job" in second.json()["error"]

    stopping = client.post("/api/train/stop")
    assert stopping.status_code == 200 and stopping.json()["state"] in ("stopping", "stopped")
    status = wait_for(client, lambda s: s["state"] == "stopped", "stopped")
    assert status["message"].startswith("stopped at epoch") or status["message"].startswith("stopped after epoch")
    assert status["progress"] < 0.5 and status["model_ready"]
    assert client.get("/api/model").json()["name"] == "trained on this page"
    again = client.post("/api/train/stop")
    assert again.status_code == 409 and "the last job is stopped" in again.json()["error"]
    # a finished job frees the slot
    assert client.post("/api/train/start", json=SLOW).status_code == 202
    assert client.get("/api/train/status").json()["job"] == 2


def test_pause_holds_the_position_and_resume_continues(client):
    assert client.post("/api/train/start", json=SLOW).status_code == 202
    wait_for(client, lambda s: s["state"] == "running" and s["points_total"] >= 1, "running")
    assert client.post("/api/train/pause").status_code == 200
    paused = wait_for(client, lambda s: s["state"] == "paused", "paused")
    assert paused["paused"] and "paused after batch" in paused["message"]
    time.sleep(0.3)   # while paused nothing moves, however long we look
    still = client.get("/api/train/status").json()
    assert (still["state"], still["epoch"], still["batch"], still["points_total"]) == \
        ("paused", paused["epoch"], paused["batch"], paused["points_total"])
    assert client.post("/api/train/resume").status_code == 200
    wait_for(client, lambda s: s["state"] == "running" and s["points_total"] > paused["points_total"], "moving again")
    # stop works from a pause too
    client.post("/api/train/pause")
    wait_for(client, lambda s: s["state"] == "paused", "paused again")
    assert client.post("/api/train/stop").status_code == 200
    wait_for(client, lambda s: s["state"] == "stopped", "stopped from a pause")


def test_the_learning_rate_changes_while_it_trains(client):
    assert client.post("/api/train/start", json=SLOW).status_code == 202
    wait_for(client, lambda s: s["state"] == "running" and s["points_total"] >= 1, "running")
    changed = client.post("/api/train/lr", json={"lr": 0.01})
    assert changed.status_code == 200
    assert changed.json()["lr_scale"] == pytest.approx(0.01 / 0.05)
    before = changed.json()["points_total"]
    status = wait_for(client, lambda s: s["points_total"] >= before + 3, "three more points")
    assert status["lr"] == pytest.approx(0.01)
    assert status["points"][-1]["lr"] == pytest.approx(0.01)
    for bad in (0, -1, "fast", "nan", None):
        response = client.post("/api/train/lr", json={"lr": bad})
        assert response.status_code == 422, bad
    assert client.post("/api/train/lr", json={}).status_code == 422
    client.post("/api/train/stop")
    wait_for(client, lambda s: s["state"] == "stopped", "stopped")
    assert client.post("/api/train/lr", json={"lr": 0.02}).status_code == 409


@pytest.mark.parametrize("settings, message", [
    ({"hidden": "abc"}, "hidden layers must be sizes"),
    ({"hidden": "5000"}, "at most 4 hidden layers of 1-2048 units"),
    ({"hidden": "8-8-8-8-8"}, "at most 4 hidden layers"),
    ({"epochs": 1000}, "epochs must be between 1 and 100"),
    ({"epochs": 2.5}, "epochs must be a whole number"),
    ({"limit_train": 10}, "limit_train must be between 100 and 60000"),
    ({"lr": "nan"}, "lr must be a finite number"),
    ({"lr": 0}, "lr must be > 0"),
    ({"optimizer": "fancy"}, "optimizer must be one of sgd, momentum"),
    ({"activation": "softmax"}, "activation must be one of"),       # an output activation, not a hidden one
    ({"schedule": "linear"}, "schedule must be one of"),
    ({"dropout": 1}, "dropout must be [0, 1)"),
    ({"batch_size": 0}, "batch_size must be between 1 and 2048 on this page"),
    ({"step_delay_ms": 60000}, "step_delay_ms must be between 0 and 1000"),
    ({"layers": []}, "unknown setting(s): layers"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_settings_are_refused_with_422(client, settings, message):
    response = client.post("/api/train/start", json=settings)
    assert response.status_code == 422
    assert message in response.json()["error"]
    assert client.get("/api/train/status").json()["state"] == "idle"


def test_malformed_and_oversized_bodies(client):
    response = client.post("/api/train/start", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and "malformed JSON" in response.json()["error"]
    response = client.post("/api/train/start", content=b" " * 20000, headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and "request body over" in response.json()["error"]


def test_controls_without_a_job_are_conflicts(client):
    for action in ("pause", "resume", "stop"):
        response = client.post(f"/api/train/{action}")
        assert response.status_code == 409 and "no job has been started" in response.json()["error"]
    assert client.get("/api/train/model").status_code == 404


def test_options_come_from_the_registry(client):
    from digitnet.config import CONSTRAINTS
    from digitnet.nn.registry import entry, names

    options = client.get("/api/train/options").json()
    assert options["defaults"]["hidden"] == "128"
    assert options["limits"]["epochs"] == [1, 100] and options["limits"]["limit_train"] == [100, 60000]
    # exactly the registered names: a newly registered activation or optimizer is on the page at once
    assert options["choices"]["activation"] == names("activation", tag="hidden")
    assert options["choices"]["optimizer"] == names("optimizer")
    assert options["choices"]["schedule"] == names("schedule") and options["choices"]["loss"] == names("loss")
    assert {"gelu", "rmsprop"} <= set(options["choices"]["activation"]) | set(options["choices"]["optimizer"])
    for kind, listed in options["entries"].items():
        assert [e["name"] for e in listed] == options["choices"][kind]
        for shown in listed:
            registered = entry(kind, shown["name"])
            assert shown["formula"] == registered.formula and shown["gradient"] == registered.gradient
            assert shown["settings"] == [s.to_dict() for s in registered.settings]
    rmsprop = next(e for e in options["entries"]["optimizer"] if e["name"] == "rmsprop")
    assert rmsprop["label"] == "RMSprop" and {s["name"]: s["range"] for s in rmsprop["settings"]}["alpha"] == "[0, 1)"
    assert next(e for e in options["entries"]["activation"] if e["name"] == "gelu")["label"] == "GELU"
    assert options["constraints"]["lr"] == CONSTRAINTS["lr"].to_dict()
    # every default is a valid setting
    from digitnet.web.training import settings_to_config

    config, delay = settings_to_config(options["defaults"])
    assert (config.activation, config.optimizer, delay) == (options["defaults"]["activation"],
                                                            options["defaults"]["optimizer"], 0)


def test_a_gelu_network_trains_with_rmsprop(client):
    """GELU and RMSprop were only registered in digitnet.nn: the Train tab's API trains with them."""
    settings = {"hidden": "8", "activation": "GELU", "optimizer": "rmsprop", "schedule": "cosine", "lr": 0.003,
                "epochs": 1, "limit_train": 200, "batch_size": 50}
    response = client.post("/api/train/start", json=settings)
    assert response.status_code == 202, response.json()
    assert response.json()["settings"]["activation"] == "gelu" and response.json()["settings"]["optimizer"] == "rmsprop"
    status = wait_for(client, lambda s: s["state"] in ("finished", "failed"), "the end")
    assert status["state"] == "finished", status["message"]
    model = client.manager.last_model
    assert [layer.layer_type for layer in model.model.layers] == ["Dense", "GELU", "Dense"]
    assert model.metadata["training"]["optimizer"] == "rmsprop" and model.metadata["training"]["schedule"] == "cosine"
    assert client.get("/api/model").json()["hidden_layers"][0]["name"] == "Hidden layer 1 · GELU"


def test_settings_and_the_weights_picture():
    from digitnet.errors import ConfigError
    from digitnet.web.training import hidden_sizes, settings_to_config, weights_picture

    config, delay = settings_to_config({"hidden": "256-64", "optimizer": "ADAM", "lr": "0.001", "step_delay_ms": 5})
    assert (config.arch, config.optimizer, config.lr, delay) == ("784-256-64-10", "adam", 0.001, 5)
    assert (config.dataset, config.val_split, config.epochs) == ("mnist", 0.1, 5)
    assert hidden_sizes("") == [] and hidden_sizes([10, 20]) == [10, 20]
    with pytest.raises(ConfigError):
        hidden_sizes("0")
    assert weights_picture(np.zeros((100, 5))) is None
    weights = np.random.default_rng(0).normal(size=(784, 5))
    image = decode_png(weights_picture(weights)).convert("RGB")
    assert image.size == ((5 * 29 - 1) * 2, (28) * 2)
    # unit 0's tile: red where its weight is positive, blue where negative (no tiles mixed up)
    pixels = np.asarray(image)
    tile = pixels[0:56:2, 0:56:2].astype(int)
    positive = weights[:, 0].reshape(28, 28) > 0.5
    negative = weights[:, 0].reshape(28, 28) < -0.5
    assert np.all(tile[positive, 0] > tile[positive, 2]) and np.all(tile[negative, 2] > tile[negative, 0])


def test_a_bad_kernels_choice_fails_when_the_server_starts():
    require_module("fastapi")
    from digitnet.errors import ConfigError
    from digitnet.web.training import TrainingManager

    with pytest.raises(ConfigError, match="unknown kernels 'gpu'"):
        TrainingManager(kernels="gpu")
    assert TrainingManager(kernels="reference").kernels == "reference"
