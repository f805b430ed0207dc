"""POST /api/explain (the Inside tab's API) with FastAPI's TestClient, for an MLP, a sigmoid/MSE network
and a CNN: forward and backward steps with formulas, shapes and values; the same numbers and lines as
``digitnet explain``; probabilities as /api/predict's; the served model never changes; bad requests."""

from __future__ import annotations

import base64
import threading
import time
import urllib.request
import warnings

import numpy as np
import pytest

from digitnet.explain import explain_image
from digitnet.io import load_model
from digitnet.viz import explain as text
from tests.conftest import require_module
from tests.web.conftest import INSIDE_KINDS
from tests.web.support import encode, mnist_split, render, serve


@pytest.fixture(scope="module")
def clients(inside_runs):
    """``{kind: (TestClient, LoadedModel)}``: one app per network, each serving it as ``digitnet serve`` does."""
    require_module("fastapi")
    require_module("httpx")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*httpx2.*")
        from fastapi.testclient import TestClient
    from digitnet.web.server import create_app

    result = {}
    for kind, run in inside_runs.items():
        loaded = load_model(run)
        result[kind] = (TestClient(create_app(loaded), raise_server_exceptions=False), loaded)
    yield result
    for client, _ in result.values():
        client.close()


def explained(client, **body) -> dict:
    response = client.post("/api/explain", json=body)
    assert response.status_code == 200, response.json()
    return response.json()


def lines_of(answer: dict) -> list[str]:
    """Every line of digitnet explain's text that the answer carries, in the order the command prints them."""
    lines = [answer["input"]["text"]]
    for step in answer["forward"]:
        t = step["text"]
        lines += [t["title"], t["formula"], t["shapes"], *t["params"], t["preview"], t["stats"]]
        lines += [t["sentence"]] if t["sentence"] else []
    lines += [answer["output"]["text"]["formula"], *answer["output"]["text"]["probabilities"]]
    loss = answer["loss"]["text"]
    lines += [loss["title"], loss["formula"], loss["settings"], loss["value"], loss["grad_formula"], loss["grad"]]
    for step in answer["backward"]:
        lines += [step["text"]["title"], *step["text"]["formulas"], *step["text"]["notes"]]
    update = answer["update"]["text"]
    lines += [update["title"], update["formula"], update["settings"], *update["params"], update["result"],
              update["note"]]
    return [line.strip() for line in lines]


def assert_in_order(expected: list[str], printed: str) -> None:
    """Each expected line is a whole line of ``printed``, in the same order."""
    remaining = [line.strip() for line in printed.splitlines()]
    for line in expected:
        assert line in remaining, f"{line!r} is not printed (in this order)"
        remaining = remaining[remaining.index(line) + 1:]


def float_values(array: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(array).ravel()]


@pytest.mark.parametrize("kind", INSIDE_KINDS)
def test_forward_and_backward_steps_with_formulas_shapes_and_values(clients, kind):
    client, loaded = clients[kind]
    images, _ = mnist_split("test")
    answer = explained(client, pixels=images[0].tolist(), label=3, lr=0.05)
    reference = explain_image(load_model(loaded.path, kernels="reference").model, images[0], 3, lr=0.05,
                              classes=loaded.classes, training=loaded.training)
    model = loaded.model
    assert [s["kind"] for s in answer["forward"]] == [layer.layer_type for layer in model.layers]
    assert [s["index"] for s in answer["backward"]] == list(reversed(range(len(model.layers))))
    for step, ref in zip(answer["forward"], reference.forward, strict=True):
        assert step["formula"] == ref.formula and step["text"]["formula"] == ref.formula
        assert step["output_shape"] == list(ref.output_shape) and step["input_shape"] == list(ref.input_shape)
        output = step["output"]
        assert output["shape"] == list(ref.output_shape) and output["norm"] == pytest.approx(np.linalg.norm(ref.output))
        if ref.output.size <= 1024:       # exact float32 values
            assert output["values"] == float_values(ref.output)
        else:                             # a picture instead, and never megabytes of numbers
            assert output["values"] is None and output["picture"]["src"].startswith("data:image/png;base64,")
    for step, ref in zip(answer["backward"], reference.backward, strict=True):
        assert [g["formula"] for g in step["gradients"]] == ref.formulas
        for gradient in step["gradients"]:
            array = ref.grads.get(gradient["of"], ref.grad_in if gradient["of"] == ref.input_symbol else None)
            assert gradient["tensor"]["shape"] == list(array.shape)
            assert gradient["tensor"]["norm"] == pytest.approx(np.linalg.norm(array.astype(np.float64)), rel=1e-6)
            if array.size <= 1024:
                assert gradient["tensor"]["values"] == float_values(array)
    assert answer["loss"]["value"] == reference.loss.value
    assert answer["loss"]["grad"]["values"] == float_values(reference.loss.grad)
    assert answer["probabilities"] == float_values(reference.probabilities)
    assert answer["update"]["loss_after"] == reference.update.loss_after
    assert answer["label"] == 3 and answer["label_given"] and answer["update"]["lr"] == 0.05
    assert answer["image"] == images[0].tolist() and answer["source"] == {"kind": "pixels"}
    assert lines_of(answer) == [line.strip() for line in lines_of_reference(reference)]
    # kind by kind: what the page needs to tell
    if kind == "sigmoid_mse":
        assert answer["loss"]["name"] == "mse" and answer["output_kind"] == "sigmoid"
        assert answer["loss"]["settings"]["reduction"] == "sum"
        assert "saturated" in answer["forward"][1]["text"]["sentence"]
    elif kind == "mlp":
        assert "ReLUs are off" in answer["forward"][1]["text"]["sentence"]
    else:
        first = answer["forward"][0]["output"]["picture"]
        assert first["tiles"]["count"] == 6 and first["tiles"]["height"] == 28          # one tile per channel
        assert answer["forward"][0]["params"]["weights"]["picture"]["tiles"]["count"] == 6   # the 6 kernels


def lines_of_reference(e) -> list[str]:
    """The same lines, straight from viz.explain on a reference explanation (what digitnet explain prints)."""
    lines = [text.input_line(e)]
    for step in e.forward:
        t = text.forward_lines(step)
        lines += [t["title"], t["formula"], t["shapes"], *t["params"], t["preview"], t["stats"]]
        lines += [t["sentence"]] if t["sentence"] else []
    output = text.output_lines(e)
    lines += [output["formula"], *output["probabilities"]]
    loss = text.loss_lines(e)
    lines += [loss["title"], loss["formula"], loss["settings"], loss["value"], loss["grad_formula"], loss["grad"]]
    for step in e.backward:
        t = text.backward_lines(step)
        lines += [t["title"], *t["formulas"], *t["notes"]]
    u = text.update_lines(e)
    return lines + [u["title"], u["formula"], u["settings"], *u["params"], u["result"], u["note"]]


@pytest.mark.parametrize("kind", INSIDE_KINDS)
def test_the_numbers_are_digitnet_explains(clients, inside_runs, kind, capsys):
    """A test image by index: every line the API carries is a line `digitnet explain --image` prints."""
    from digitnet.cli import main

    client, _ = clients[kind]
    answer = explained(client, test_index=12, lr=0.2)
    _, labels = mnist_split("test")
    assert answer["source"] == {"kind": "test", "index": 12, "dataset": "mnist", "label": int(labels[12])}
    assert answer["label"] == int(labels[12]) and answer["label_given"]      # a test image's own label
    capsys.readouterr()
    assert main(["explain", str(inside_runs[kind]), "--image", "12", "--lr", "0.2"]) == 0
    printed = capsys.readouterr().out
    assert_in_order(lines_of(answer), printed)
    # and another label and rate give other numbers, again the command's
    other = (int(labels[12]) + 1) % 10
    answer = explained(client, test_index=12, label=other, lr=0.01)
    assert main(["explain", str(inside_runs[kind]), "--image", "12", "--label", str(other), "--lr", "0.01"]) == 0
    assert_in_order(lines_of(answer), capsys.readouterr().out)


@pytest.mark.parametrize("kind", INSIDE_KINDS)
def test_probabilities_equal_predict_and_the_model_never_changes(clients, kind):
    client, loaded = clients[kind]
    images, _ = mnist_split("test")
    before = {k: v.copy() for k, v in loaded.model.state_dict().items()}
    photo = encode(render(images[5]))
    predicted = client.post("/api/predict", content=photo, headers={"Content-Type": "image/png"}).json()
    answer = client.post("/api/explain?label=2&lr=5", content=photo, headers={"Content-Type": "image/png"})
    assert answer.status_code == 200
    answer = answer.json()
    assert answer["image"] == predicted["image"] and answer["source"] == {"kind": "image"}
    if kind == "cnn":   # the served CNN computes with the fast kernels, explain with the textbook layers
        np.testing.assert_allclose(answer["probabilities"], predicted["probabilities"], rtol=1e-5, atol=1e-6)
    else:
        assert answer["probabilities"] == predicted["probabilities"]
    assert answer["predicted"] == predicted["label"]
    assert answer["update"]["lr"] == 5 and answer["label"] == 2
    for key, value in loaded.model.state_dict().items():        # a step of lr 5 was taken, on a copy
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    again = client.post("/api/predict", content=photo, headers={"Content-Type": "image/png"}).json()
    assert again["probabilities"] == predicted["probabilities"]


def test_without_a_label_the_prediction_is_the_target(clients):
    client, _ = clients["mlp"]
    images, _ = mnist_split("test")
    answer = explained(client, pixels=images[0].tolist())
    assert answer["label"] == answer["predicted"] and not answer["label_given"]
    assert "no label given" in answer["loss"]["text"]["title"]
    assert answer["update"]["lr"] == 0.1


def test_one_sgd_step_on_the_true_label(clients):
    """A wrong label's loss falls after one step and its probability rises: the point of the step."""
    client, _ = clients["mlp"]
    images, labels = mnist_split("test")
    wrong = (int(labels[0]) + 3) % 10
    answer = explained(client, pixels=images[0].tolist(), label=wrong, lr=0.05)
    u = answer["update"]
    assert u["loss_after"] < u["loss_before"] and u["p_true_after"] > u["p_true_before"]
    assert u["probabilities_after"][wrong] == pytest.approx(u["p_true_after"])
    assert u["text"]["result"].startswith(f"loss {u['loss_before']:.4f} -> {u['loss_after']:.4f} (down)")


def test_units_their_weights_and_gradients(clients):
    client, loaded = clients["mlp"]
    images, _ = mnist_split("test")
    answer = explained(client, pixels=images[0].tolist(), label=4)
    assert [u["layer"] for u in answer["unit_layers"]] == [0, 2]
    unit = answer["unit"]        # by default: the first layer's unit whose weights would change most
    grads = next(s for s in answer["backward"] if s["index"] == 0)["gradients"][0]["tensor"]
    assert unit["layer"] == 0 and unit["index"] == int(np.argmax(grads["units"]["values"]))
    # a first Dense layer's unit: its 784 incoming weights, drawn as the 28x28 image they look at
    chosen = explained(client, pixels=images[0].tolist(), label=4, unit={"layer": 0, "index": 7})["unit"]
    weights = loaded.model.layers[0].params["weights"]
    assert chosen["index"] == 7 and chosen["weights"]["values"] == float_values(weights[:, 7])
    assert chosen["weights"]["picture"]["width"] == 28 and chosen["grad"]["shape"] == [784]
    assert chosen["what"].startswith("weights[:, 7]: the 784 weights into unit 7 of z1")
    # the forward values of a hidden layer say which unit they belong to
    assert [s["unit_layer"] for s in answer["forward"]] == [0, 0, 2]
    # a CNN's unit is a filter; the Dense after the flattened maps shows its weights as those maps
    client, loaded = clients["cnn"]
    answer = explained(client, pixels=images[0].tolist(), unit="3:5")
    assert answer["unit"]["what"].startswith("weights[5]: filter 5 of z2, 6 x 5 x 5")
    assert answer["unit"]["weights"]["values"] == float_values(loaded.model.layers[3].params["weights"][5])
    assert answer["unit"]["weights"]["picture"]["tiles"]["count"] == 6
    dense = explained(client, pixels=images[0].tolist(), unit={"layer": 7, "index": 0})["unit"]
    assert dense["weights"]["shape"] == [8, 7, 7] and dense["weights"]["picture"]["tiles"]["count"] == 8
    assert [s["unit_layer"] for s in answer["forward"]] == [0, 0, 0, 3, 3, 3, None, 7, 7, 9]


def test_bounded_answers(clients):
    """Large arrays come as pictures, never as lists of more than 1,024 numbers."""
    client, _ = clients["cnn"]
    images, _ = mnist_split("test")
    response = client.post("/api/explain", json={"pixels": images[0].tolist()})
    assert len(response.content) < 1_000_000

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("values"), list):
                assert len(node["values"]) <= 1024
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(response.json())


@pytest.mark.parametrize("body, status, message", [
    ({"pixels": [[0] * 28] * 28}, 422, "no ink found"),
    ({"pixels": [[1, 2]]}, 422, "28x28"),
    ({"label": 3}, 422, '"test_index" (a test image)'),
    ({"test_index": 10000}, 422, "test_index must be 0-9999"),
    ({"test_index": "two"}, 422, "test_index must be a whole number"),
    ({"test_index": 0, "label": 10}, 422, "label must be a class 0-9"),
    ({"test_index": 0, "label": True}, 422, "label must be a whole number"),
    ({"test_index": 0, "lr": 0}, 422, "lr must be > 0"),
    ({"test_index": 0, "lr": "fast"}, 422, "lr must be a number"),
    ({"test_index": 0, "unit": {"layer": 1, "index": 0}}, 422, "not a layer with incoming weights"),
    ({"test_index": 0, "unit": {"layer": 0, "index": 48}}, 422, "layer 0 has units 0-47"),
    ({"test_index": 0, "unit": [0, 1]}, 422, 'unit must be {"layer": i, "index": j}'),
    ({"image": "not base64!"}, 400, "not valid base64"),
])
def test_bad_requests(clients, body, status, message):
    client, _ = clients["mlp"]
    response = client.post("/api/explain", json=body)
    assert response.status_code == status, response.json()
    assert message in response.json()["error"]


def test_bad_bodies_are_refused_as_for_predict(clients):
    client, _ = clients["mlp"]
    assert client.post("/api/explain", content=b"", headers={"Content-Type": "application/json"}).status_code == 400
    assert client.post("/api/explain", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
    big = b"\0" * (2 * 1024 * 1024 + 1)
    assert client.post("/api/explain", content=big, headers={"Content-Type": "image/png"}).status_code == 413
    response = client.post("/api/explain", content=b"not a picture", headers={"Content-Type": "image/png"})
    assert response.status_code == 422 and "not a PNG" in response.json()["error"]
    images, _ = mnist_split("test")
    upload = client.post("/api/explain", files={"file": ("seven.png", encode(render(images[0])), "image/png")},
                         params={"unit": "2:3"})
    assert upload.status_code == 200 and upload.json()["unit"]["index"] == 3
    data_url = "data:image/png;base64," + base64.b64encode(encode(render(images[0]))).decode()
    assert explained(client, image=data_url)["image"] == upload.json()["image"]


def test_test_images_that_are_not_on_the_server_are_a_404(clients, monkeypatch):
    from digitnet.data import datasets
    from digitnet.errors import DataError
    from digitnet.web import inside

    def missing(*args, **kwargs):
        raise DataError("mnist test files not found")

    monkeypatch.setattr(inside, "_TEST_SETS", {})
    monkeypatch.setattr(datasets, "load_dataset", missing)
    response = clients["mlp"][0].post("/api/explain", json={"test_index": 0})
    assert response.status_code == 404 and "not on this server" in response.json()["error"]


def test_explaining_runs_off_the_event_loop(inside_runs, monkeypatch):
    """While a (slowed) explanation is computed, the server answers other requests at once."""
    require_module("uvicorn")
    from digitnet.web import inside
    from digitnet.web.server import create_app

    real = inside.explain_payload

    def slow(*args, **kwargs):
        time.sleep(1.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(inside, "explain_payload", slow)
    images, _ = mnist_split("test")
    with serve(create_app(inside_runs["mlp"])) as url:
        request = urllib.request.Request(url + "/api/explain", data=b'{"test_index": 1}',
                                         headers={"Content-Type": "application/json"})
        done = {}
        worker = threading.Thread(target=lambda: done.update(status=urllib.request.urlopen(request, timeout=30).status))
        worker.start()
        time.sleep(0.3)
        started = time.perf_counter()
        with urllib.request.urlopen(url + "/healthz", timeout=10) as response:
            assert response.status == 200
        predict = urllib.request.Request(url + "/api/predict", data=encode(render(images[0])),
                                         headers={"Content-Type": "image/png"})
        with urllib.request.urlopen(predict, timeout=10) as response:
            assert response.status == 200
        assert time.perf_counter() - started < 1.0 and worker.is_alive()
        worker.join(timeout=30)
        assert done == {"status": 200}
