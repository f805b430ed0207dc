"""The page in a real headless Chromium: draw with the mouse, read the prediction, upload a file."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import require_chromium
from tests.web.strokes import STROKES
from tests.web.support import encode, mnist_split, render

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def page(live_server):
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # console errors include Content-Security-Policy violations: the page must run under its CSP
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto(live_server + "/")
        wait_until(page, "() => document.getElementById('probabilities').children.length === 10")
        page.js_errors = errors
        yield page
        browser.close()


def draw(page, strokes) -> None:
    """Drag the mouse along each polyline on the canvas (coordinates in canvas pixels, 0-280)."""
    box = page.locator("#canvas").bounding_box()
    scale = box["width"] / 280

    def at(point):
        return box["x"] + point[0] * scale, box["y"] + point[1] * scale

    for line in strokes:
        page.mouse.move(*at(line[0]))
        page.mouse.down()
        for start, stop in zip(line, line[1:], strict=False):
            for t in np.linspace(0, 1, 8)[1:]:
                page.mouse.move(*at((start[0] + t * (stop[0] - start[0]), start[1] + t * (stop[1] - start[1]))))
        page.mouse.up()


def wait_until(page, predicate: str, limit_seconds: float = 30) -> None:
    """Poll a JavaScript predicate with page.evaluate (page.wait_for_function uses eval, which the
    page's Content-Security-Policy forbids, as it should)."""
    for _ in range(int(limit_seconds / 0.05)):
        if page.evaluate(predicate):
            return
        page.wait_for_timeout(50)
    pytest.fail(f"the page never reached: {predicate}")


def settled_label(page) -> str:
    """The shown prediction once no request is pending."""
    wait_until(page, "() => !window.digitnet.busy && "
                     "['done', 'error'].includes(document.getElementById('prediction').dataset.state)")
    return page.locator("#prediction-label").inner_text().strip()


@pytest.mark.parametrize("digit", ["7", "0", "1"])
def test_drawn_digit_is_read(page, digit, tmp_path):
    page.click("#clear")
    assert page.locator("#prediction-label").inner_text().strip() == "–"
    draw(page, STROKES[digit])
    assert settled_label(page) == digit
    probabilities = page.locator("#probabilities li.top .name").inner_text()
    assert probabilities == digit  # the highlighted bar is the predicted class
    # the network's view was drawn: the 28x28 canvas has bright pixels near its centre
    centre_brightness = page.evaluate(
        "() => Array.from(document.getElementById('network-input').getContext('2d')"
        ".getImageData(7, 7, 14, 14).data).filter((v, i) => i % 4 === 0).reduce((a, b) => Math.max(a, b), 0)")
    assert centre_brightness > 200
    assert page.locator("#activations .cell").count() == 64
    assert "active" in page.locator("#activations .layer-title").first.inner_text()
    page.screenshot(path=str(tmp_path / f"draw-{digit}.png"), full_page=True)
    assert (tmp_path / f"draw-{digit}.png").stat().st_size > 10_000
    assert page.js_errors == []


def test_upload_and_clear(page, tmp_path):
    images, labels = mnist_split("test")
    photo = tmp_path / "digit.jpg"
    photo.write_bytes(encode(render(images[1], invert=True), "JPEG", quality=80))
    page.set_input_files("#upload", str(photo))
    assert settled_label(page) == str(labels[1])
    page.click("#clear")
    assert page.locator("#prediction-label").inner_text().strip() == "–"
    assert page.js_errors == []


def test_bad_upload_shows_error(page, tmp_path):
    junk = tmp_path / "notes.png"
    junk.write_bytes(b"this is not a picture")
    page.set_input_files("#upload", str(junk))
    settled_label(page)
    assert page.locator("#prediction").get_attribute("data-state") == "error"
    assert "not a PNG" in page.locator("#status").inner_text()
    page.js_errors.clear()  # the browser logs the 422 answer as a console error: expected here
