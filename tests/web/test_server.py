"""The JSON API with FastAPI's TestClient: every endpoint, every way to send an image, every bad input."""

from __future__ import annotations

import base64
import io
import warnings

import numpy as np
import pytest
from PIL import Image

from tests.conftest import require_module
from tests.web.support import encode, mnist_split, render, row_of_digits


@pytest.fixture(scope="module")
def client(loaded_model):
    require_module("fastapi")
    require_module("httpx")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*httpx2.*")  # starlette's note about httpx vs httpx2
        from fastapi.testclient import TestClient
    from digitnet.web.server import create_app

    with TestClient(create_app(loaded_model), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def seven():
    images, labels = mnist_split("test")
    assert labels[0] == 7
    return images[0]


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model": "model.safetensors"}


def test_model_info(client, loaded_model):
    info = client.get("/api/model").json()
    assert info["classes"] == [str(d) for d in range(10)]
    assert info["num_params"] == 784 * 64 + 64 + 64 * 10 + 10
    assert info["input_shape"] == [784]
    assert [layer["type"] for layer in info["layers"]] == ["Dense", "ReLU", "Dense"]
    assert info["hidden_layers"] == [{"index": 1, "name": "Hidden layer 1 · ReLU", "shape": [64]}]
    assert info["metrics"]["test_accuracy"] == pytest.approx(loaded_model.metrics["test_accuracy"])
    assert info["architecture"] == loaded_model.model.config()
    assert info["dataset"] == "mnist"


def test_page_static_files_and_openapi(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="canvas"' in page.text and 'data-tab="draw"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from a CDN: works offline
    for name in ("app.js", "style.css", "favicon.svg"):
        assert client.get(f"/static/{name}").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/api/predict", "/api/model", "/healthz"} <= set(schema["paths"])
    assert "multipart/form-data" in schema["paths"]["/api/predict"]["post"]["requestBody"]["content"]


def check_seven(result, model) -> None:
    assert result["label"] == 7 and result["class"] == "7"
    assert result["confidence"] == max(result["probabilities"]) > 0.5
    assert sum(result["probabilities"]) == pytest.approx(1, abs=1e-4)
    image = np.array(result["image"], dtype=np.uint8)
    assert image.shape == (28, 28) and image.max() == 255
    # the activations are those of the network for exactly the returned image
    (hidden,) = result["activations"]
    expected = model.forward_all(image.reshape(1, 784) / np.float32(255))[2][0]
    assert hidden["shape"] == [64] and hidden["kind"] == "units"
    np.testing.assert_allclose(hidden["values"], expected, atol=1e-3)
    assert min(hidden["values"]) >= 0  # after a ReLU


def test_predict_raw_png(client, seven, loaded_model):
    response = client.post("/api/predict", content=encode(render(seven)), headers={"content-type": "image/png"})
    assert response.status_code == 200
    check_seven(response.json(), loaded_model.model)


def test_predict_multipart_jpeg(client, seven, loaded_model):
    files = {"file": ("seven.jpg", encode(render(seven), "JPEG"), "image/jpeg")}
    response = client.post("/api/predict", files=files)
    assert response.status_code == 200
    check_seven(response.json(), loaded_model.model)


def test_predict_data_url(client, seven, loaded_model):
    url = "data:image/png;base64," + base64.b64encode(encode(render(seven))).decode()
    response = client.post("/api/predict", json={"image": url})
    assert response.status_code == 200
    check_seven(response.json(), loaded_model.model)


def test_predict_pixels_used_as_is(client, seven, loaded_model):
    response = client.post("/api/predict", json={"pixels": seven.tolist()})
    assert response.status_code == 200
    result = response.json()
    assert np.array_equal(np.array(result["image"], dtype=np.uint8), seven)
    check_seven(result, loaded_model.model)


def test_predict_number(client):
    images, labels = mnist_split("test")
    picks = [0, 1, 2]  # 7, 2, 1
    response = client.post("/api/predict?digits=true", content=encode(row_of_digits([images[k] for k in picks])),
                           headers={"content-type": "image/png"})
    assert response.status_code == 200
    result = response.json()
    assert result["number"] == "".join(str(labels[k]) for k in picks)
    assert len(result["digits"]) == 3 and all(len(d["image"]) == 28 for d in result["digits"])


BLANK_PNG = encode(np.full((60, 60), 255, dtype=np.uint8))


@pytest.mark.parametrize("kwargs, status, message", [
    ({"content": b"GIF89a but not really", "headers": {"content-type": "image/gif"}}, 422, "not a PNG"),
    ({"content": BLANK_PNG, "headers": {"content-type": "image/png"}}, 422, "no ink"),
    ({"json": {"pixels": [[0] * 28] * 28}}, 422, "no ink"),
    ({"content": b"abc", "headers": {"content-type": "text/plain"}}, 415, "unsupported content type"),
    ({"content": b"abc"}, 415, "unsupported content type"),
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "malformed JSON"),
    ({"json": [1, 2, 3]}, 422, "must be an object"),
    ({"json": {"pixels": [[0] * 28] * 27}}, 422, "28x28"),
    ({"json": {"pixels": [[0] * 27] * 28}}, 422, "28x28"),
    ({"json": {"pixels": [["a"] * 28] * 28}}, 422, "numbers"),
    ({"json": {"pixels": [[300] * 28] * 28}}, 422, "between 0 and 255"),
    ({"json": {"pixels": 5}}, 422, "28x28"),
    ({"json": {"image": "data:image/png;base64,@@@"}}, 400, "base64"),
    ({"json": {"image": 12}}, 422, "data URL"),
    ({"json": {"something": 1}}, 422, "needs"),
    ({"content": b"", "headers": {"content-type": "image/png"}}, 400, "empty"),
    ({"files": {"other": ("a.txt", b"", "text/plain")}}, 400, "empty"),
    ({"data": {"field": "value"}, "files": {"x": ("", b"", "")}}, 400, ""),
    ({"content": b"--xyz\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=xyz"}}, 400, ""),
    ({"json": {"pixels": [[9] * 28] * 28, "digits": True}}, 422, "needs an image"),
])
def test_bad_input_is_a_4xx_json_error(client, kwargs, status, message):
    response = client.post("/api/predict", **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert message in response.json()["error"]


def test_upload_limits(client):
    too_big = b"\x89PNG" + b"0" * (2 * 1024 * 1024)
    response = client.post("/api/predict", content=too_big, headers={"content-type": "image/png"})
    assert response.status_code == 413 and "limit" in response.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while reading the stream
        for _ in range(40):
            yield b"0" * 65536

    response = client.post("/api/predict", content=chunks(), headers={"content-type": "image/png"})
    assert response.status_code == 413
    huge = _huge_png(5000, 4000)  # 20 megapixels, a few KB as PNG: refused before decoding
    response = client.post("/api/predict", content=huge, headers={"content-type": "image/png"})
    assert response.status_code == 422 and "pixels" in response.json()["error"]


def _huge_png(width: int, height: int) -> bytes:
    """A one-bit white PNG: millions of pixels in a few kilobytes."""
    buffer = io.BytesIO()
    Image.new("1", (width, height), 1).save(buffer, "PNG")
    return buffer.getvalue()


def test_wrong_method_and_unknown_route(client):
    assert client.get("/api/predict").status_code == 405
    assert "error" in client.get("/api/predict").json()
    response = client.get("/no/such/page")
    assert response.status_code == 404 and response.json() == {"error": "Not Found"}


def test_unexpected_error_is_500_json_and_server_survives(client, monkeypatch, seven):
    import digitnet.web.server as server

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(server, "predict_payload", broken)
    response = client.post("/api/predict", json={"pixels": seven.tolist()})
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error (logged on the server)"}
    monkeypatch.undo()
    assert client.get("/healthz").status_code == 200
    assert client.post("/api/predict", json={"pixels": seven.tolist()}).json()["label"] == 7


def test_create_app_refuses_a_bad_model_file(tmp_path):
    from digitnet.errors import ModelFileError
    from digitnet.web.server import create_app

    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(ModelFileError):
        create_app(bad)


FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]


def test_class_names_come_from_the_model_file(loaded_model, tmp_path, seven):
    """A model saved with Fashion-MNIST's classes answers with garment names (same weights here)."""
    from fastapi.testclient import TestClient

    from digitnet.io import load_model, save_model
    from digitnet.web.server import create_app

    path = save_model(tmp_path / "fashion.safetensors", loaded_model.model, classes=FASHION,
                      dataset="fashion-mnist")
    with TestClient(create_app(load_model(path))) as fashion_client:
        assert fashion_client.get("/api/model").json()["classes"] == FASHION
        result = fashion_client.post("/api/predict", json={"pixels": seven.tolist()}).json()
    assert result["class"] == FASHION[7] == "Sneaker"
    assert result["classes"] == FASHION
    assert [entry["class"] for entry in result["top3"]][0] == "Sneaker"
