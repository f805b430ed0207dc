"""The draw-a-digit web app: a FastAPI application around one loaded model.

Routes:

- ``GET /``: the page (``static/index.html`` + plain JavaScript, no build step, nothing from a CDN).
- ``POST /api/predict``: an image as a multipart upload (field ``file``), as the raw body with an
  ``image/*`` content type, or JSON ``{"pixels": 28x28 numbers 0-255}`` (already MNIST-style,
  used as is) or ``{"image": "data:image/png;base64,..."}`` (a canvas). ``?digits=true`` (or
  ``"digits": true`` in JSON) reads a row of digits as a number. Returns the prediction, the 28x28
  image the network saw, and the activations of the hidden layers.
- ``POST /api/explain``: the same image (or ``{"test_index": N}``) through the network step by step, with
  a true label and a learning rate: the forward pass, the loss, the backward pass and one SGD step, as
  ``digitnet explain`` records them (see :mod:`digitnet.web.inside`); the Inside tab draws it.
- ``GET /api/model``: architecture, class names, parameter count, metrics.
- ``GET /healthz``: liveness.
- ``GET /openapi.json``: FastAPI's own description (``/docs`` needs Swagger UI from a CDN).
- ``/api/train/*``: the live-training tab (see :mod:`digitnet.web.training`); when a job ends, its
  model replaces ``app.state.loaded`` (and ``app.state.info``), which the routes above read per request.

Every error is JSON ``{"error": "..."}`` with a 4xx status (413 too large, 415 wrong content type,
400 malformed request, 422 an image without a digit or an array of the wrong shape); anything
unexpected is logged and answered with a 500, and the server keeps running.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from digitnet import __version__
from digitnet.data.batches import images_to_inputs
from digitnet.data.images import WORK_MAX_SIDE, load_image, preprocess
from digitnet.errors import ConfigError, DigitnetError, ImageError
from digitnet.handwriting import classify, describe, join_labels
from digitnet.web.model_info import hidden_layers, model_info
from digitnet.web.training import install_training

logger = logging.getLogger("digitnet.web")

STATIC_DIR = Path(__file__).parent / "static"
#: largest request body accepted (an upload, a data URL or a JSON array)
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
#: largest image accepted, in pixels (a 2 MB PNG can decode to far more than 2 MB of pixels)
MAX_UPLOAD_PIXELS = 16_000_000
#: hidden layers wider than this send per-channel means instead of every value
MAX_ACTIVATION_VALUES = 4096
_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'")


class RequestError(Exception):
    """A bad request: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class CatchAll:
    """ASGI middleware: an unexpected exception becomes a logged 500 JSON answer, never a crash.

    (Starlette's own handler for ``Exception`` re-raises after answering; this one does not.)
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception:  # the last line of defence: log it, answer 500, keep serving
            logger.exception("unexpected error serving %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _error(500, "internal server error (logged on the server)")(scope, receive, send)


# -- inference -------------------------------------------------------------------------------------

def hidden_activations(model, image: np.ndarray) -> list[dict[str, Any]]:
    """The hidden layers' outputs for one uint8 image ``[28, 28]``.

    Each entry: ``name``, ``shape`` (one sample), ``kind`` ("units": every value, flattened; or
    "channel_means": the mean of each channel of a wide feature map) and ``values``.
    """
    outputs = model.forward_all(images_to_inputs(image[None], model.input_shape))
    result = []
    for index, name in hidden_layers(model):
        values = outputs[index + 1][0]  # forward_all's first entry is the input
        kind = "units"
        if values.size > MAX_ACTIVATION_VALUES and values.ndim > 1:
            values = values.reshape(values.shape[0], -1).mean(axis=1)
            kind = "channel_means"
        result.append({"name": name, "shape": list(outputs[index + 1].shape[1:]), "kind": kind,
                       "values": [round(float(v), 4) for v in values.ravel()[:MAX_ACTIVATION_VALUES]]})
    return result


def predict_payload(loaded, payload: dict[str, Any], digits: bool = False) -> dict[str, Any]:
    """Run the model on a parsed request: ``{"pixels": uint8 [28, 28]}`` or ``{"image": bytes}``."""
    started = time.perf_counter()
    classes = list(loaded.classes)
    if "pixels" in payload:
        parts = [payload["pixels"]]
        if digits:
            raise RequestError(422, "digits=true needs an image, not a 28x28 pixel array")
    elif digits:
        from digitnet.data.images import split_digits

        parts = split_digits(_gray(payload["image"]))
    else:
        parts = [one_image(payload)]
    probabilities = classify(loaded, np.stack(parts))
    if digits:
        per_digit = [dict(describe(p, classes), image=image.tolist()) for p, image in zip(probabilities, parts,
                                                                                         strict=True)]
        result = {"number": join_labels([d["class"] for d in per_digit]),
                  "confidence": float(np.prod([d["confidence"] for d in per_digit])),
                  "digits": per_digit}
    else:
        result = describe(probabilities[0], classes)
        result["image"] = parts[0].tolist()
        result["activations"] = hidden_activations(loaded.model, parts[0])
    result["classes"] = classes
    result["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


def _gray(data: bytes) -> np.ndarray:
    return load_image(data, max_pixels=MAX_UPLOAD_PIXELS, max_bytes=MAX_UPLOAD_BYTES, max_side=WORK_MAX_SIDE,
                      name="the uploaded image")


def one_image(payload: dict[str, Any]) -> np.ndarray:
    """The MNIST-style uint8 ``[28, 28]`` digit of a parsed request (pixels as they are, an image preprocessed)."""
    return payload["pixels"] if "pixels" in payload else preprocess(_gray(payload["image"]))


def explain_request(loaded, payload: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """``POST /api/explain``: the image (or test image) of a parsed request through the model, step by step.

    ``fields`` hold ``label``, ``lr`` and ``unit`` (see :func:`digitnet.web.inside.explain_options`).
    For a test image the label defaults to its true label, as in ``digitnet explain --image``.
    """
    from digitnet.web import inside

    started = time.perf_counter()
    options = inside.explain_options(fields, len(loaded.classes))
    if "test_index" in payload:
        image, true_label, dataset = inside.dataset_image(loaded, payload["test_index"])
        source = {"kind": "test", "index": int(payload["test_index"]), "dataset": dataset, "label": true_label}
        if options["label"] is None:
            options["label"] = true_label
    else:
        image = one_image(payload)
        source = {"kind": "pixels" if "pixels" in payload else "image"}
    result = inside.explain_payload(loaded, image, **options)
    result["source"] = source
    result["model"] = loaded.path.name if loaded.path else "model"
    result["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


# -- request parsing --------------------------------------------------------------------------------

async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_size = int(declared)
        except ValueError:
            raise RequestError(400, "bad Content-Length header") from None
        if declared_size > limit:
            raise RequestError(413, f"request body is {declared_size:,} bytes; the limit is {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body exceeds the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _pixels(value: Any) -> np.ndarray:
    """JSON ``pixels`` -> uint8 ``[28, 28]``; 422 for anything but 28 rows of 28 numbers in 0-255."""
    if not isinstance(value, list) or len(value) != 28 or not all(
            isinstance(row, list) and len(row) == 28 for row in value):
        raise RequestError(422, "pixels must be a 28x28 array (28 lists of 28 numbers 0-255)")
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise RequestError(422, "pixels must hold numbers only") from None
    if array.shape != (28, 28) or not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 255:
        raise RequestError(422, "pixels must be a 28x28 array of numbers between 0 and 255")
    if array.max() == 0:
        raise RequestError(422, "no ink found: every pixel is 0 (draw a digit first)")
    return np.round(array).astype(np.uint8)


def _data_url(value: Any) -> bytes:
    """``data:image/png;base64,...`` (or bare base64) -> the image bytes."""
    if not isinstance(value, str):
        raise RequestError(422, "image must be a data URL string (data:image/png;base64,...)")
    if value.startswith("data:"):
        header, _, value = value.partition(",")
        if ";base64" not in header:
            raise RequestError(422, "image data URL must be base64-encoded")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, "image is not valid base64") from None


async def parse_image_request(request: Request, limit: int,
                              sources: tuple[str, ...] = ("pixels", "image")) -> tuple[dict[str, Any], dict[str, Any]]:
    """The image of a request and the other fields of its JSON body (``{}`` for other bodies).

    The image is ``{"image": bytes}`` (a multipart upload, a raw ``image/*`` body, a JSON data URL) or
    ``{"pixels": uint8 [28, 28]}`` (JSON), or, when ``sources`` allows it, ``{"test_index": value}`` (JSON).
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, limit)
    if not body:
        raise RequestError(400, "empty request body: send an image, or JSON with " + " or ".join(sources))
    if content_type == "multipart/form-data":
        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, receive=replay).form(max_files=1, max_fields=8)
        except (StarletteHTTPException, ValueError, KeyError) as exc:
            raise RequestError(400, f"malformed multipart upload: {getattr(exc, 'detail', exc)}") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            upload = next((v for v in form.values() if not isinstance(v, str)), None)
        if upload is None:
            raise RequestError(400, "the multipart upload has no file (use the field name 'file')")
        data = await upload.read()
        if not data:
            raise RequestError(400, "the uploaded file is empty")
        return {"image": data}, {}
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        return {"image": body}, {}
    if content_type == "application/json":
        try:
            document = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"malformed JSON: {exc}") from None
        if not isinstance(document, dict):
            raise RequestError(422, 'JSON body must be an object: {"pixels": [[...]]} or {"image": "data:..."}')
        fields = {k: v for k, v in document.items() if k not in sources}
        if "pixels" in document:
            return {"pixels": _pixels(document["pixels"])}, fields
        if "image" in document:
            return {"image": _data_url(document["image"])}, fields
        if "test_index" in sources and "test_index" in document:
            return {"test_index": document["test_index"]}, fields
        wanted = ['"pixels" (28x28 array)', '"image" (a data URL)'] + (
            ['"test_index" (a test image)'] if "test_index" in sources else [])
        raise RequestError(422, f"JSON body needs {', '.join(wanted[:-1])} or {wanted[-1]}")
    raise RequestError(415, f"unsupported content type {content_type or '(none)'!r}: send multipart/form-data, "
                            "image/*, or application/json")


async def parse_predict_request(request: Request, limit: int) -> tuple[dict[str, Any], bool]:
    """The image (bytes) or pixels of a predict request, and whether to read several digits."""
    digits = request.query_params.get("digits", "false").lower() in ("1", "true", "yes")
    payload, fields = await parse_image_request(request, limit)
    return payload, digits or bool(fields.get("digits", False))


# -- the app ----------------------------------------------------------------------------------------

def create_app(model: str | os.PathLike | Any, *, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> FastAPI:
    """The FastAPI app serving ``model`` (a path, a run directory or a LoadedModel).

    Raises:
        ModelFileError: the model file cannot be loaded (before anything is served).
    """
    from digitnet.io import load_model

    loaded = model if hasattr(model, "model") and hasattr(model, "classes") else load_model(model)
    info = model_info(loaded)
    app = FastAPI(title="digitnet", version=__version__,
                  description="Draw a digit and watch a NumPy neural network read it.")
    # the live-training page swaps in the model it trains (under app.state.model_lock): read these per request
    app.state.loaded = loaded
    app.state.info = info
    app.state.model_lock = threading.Lock()

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(ImageError)
    async def _image_error(request: Request, exc: ImageError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(DigitnetError)
    async def _digitnet_error(request: Request, exc: DigitnetError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return _error(422, f"invalid request: {where}: {first.get('msg', 'bad value')}")

    @app.middleware("http")
    async def _security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if not request.url.path.startswith(("/docs", "/redoc")):
            response.headers.setdefault("Content-Security-Policy", _CSP)
        return response

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/healthz", summary="Liveness check")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "model": app.state.info["name"]}

    @app.get("/api/model", summary="The served model: architecture, classes, parameter count, metrics")
    def api_model() -> dict[str, Any]:
        return app.state.info

    @app.post(
        "/api/predict",
        summary="Predict the digit in an image",
        description="Send an image as multipart (field `file`), as the raw body with an `image/*` "
                    "content type, or JSON `{\"pixels\": 28x28}` / `{\"image\": \"data:image/png;base64,...\"}`. "
                    f"Bodies over {max_upload_bytes:,} bytes are refused. `?digits=true` reads a number.",
        openapi_extra={"requestBody": {"content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "file": {"type": "string", "format": "binary"}}}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": {"type": "object", "properties": {
                "pixels": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                "image": {"type": "string", "description": "a data URL"},
                "digits": {"type": "boolean"}}}}}}},
    )
    async def api_predict(request: Request) -> JSONResponse:
        payload, digits = await parse_predict_request(request, max_upload_bytes)
        result = await run_in_threadpool(predict_payload, app.state.loaded, payload, digits)
        return JSONResponse(result)

    @app.post(
        "/api/explain",
        summary="One image through the network, step by step: forward pass, loss, backward pass, one SGD step",
        description="The image as for `/api/predict` (multipart `file`, a raw `image/*` body, JSON `pixels` or "
                    "`image`), or JSON `{\"test_index\": N}` for a test image of the model's dataset. Options (JSON "
                    "fields, or query parameters for other bodies): `label` (the true class; default: the test "
                    "image's label, else the predicted class), `lr` (of the SGD step, default 0.1) and `unit` "
                    "(`{\"layer\": i, \"index\": j}` or `i:j`: the unit whose incoming weights to send whole). "
                    "Each step has its formula, shapes, statistics and values (exact numbers for arrays of at "
                    "most 1,024 values; PNG pictures of images, feature maps and kernels), with the lines "
                    "`digitnet explain` prints. Computed on a copy: the served model never changes.",
        openapi_extra={"requestBody": {"content": {
            "application/json": {"schema": {"type": "object", "properties": {
                "pixels": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                "image": {"type": "string", "description": "a data URL"},
                "test_index": {"type": "integer"}, "label": {"type": "integer"}, "lr": {"type": "number"},
                "unit": {"type": "object", "properties": {"layer": {"type": "integer"},
                                                          "index": {"type": "integer"}}}}}},
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "file": {"type": "string", "format": "binary"}}}},
            "image/png": {"schema": {"type": "string", "format": "binary"}}}}},
    )
    async def api_explain(request: Request) -> JSONResponse:
        from digitnet.web.inside import ImagesUnavailable

        payload, fields = await parse_image_request(request, max_upload_bytes, ("pixels", "image", "test_index"))
        fields = {**{k: request.query_params[k] for k in ("label", "lr", "unit") if k in request.query_params},
                  **fields}
        try:
            result = await run_in_threadpool(explain_request, app.state.loaded, payload, fields)
        except ImagesUnavailable as exc:
            raise RequestError(404, str(exc)) from None
        except ConfigError as exc:
            raise RequestError(422, str(exc)) from None
        return JSONResponse(result)

    install_training(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(CatchAll)
    return app
