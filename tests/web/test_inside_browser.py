"""The Inside tab in a real headless Chromium, for an MLP, a sigmoid/MSE network and a CNN: draw a digit,
open Inside, pick a label, see the backward pass and one SGD step; the numbers on the page are the API's
and ``digitnet explain``'s for the same image."""

from __future__ import annotations

import base64
import json
import urllib.request

import numpy as np
import pytest

from digitnet.explain import explain_image
from digitnet.io import load_model
from digitnet.viz.explain import format_text
from tests.conftest import require_chromium, require_module
from tests.web.conftest import INSIDE_KINDS
from tests.web.strokes import STROKES
from tests.web.support import encode, mnist_split, render, serve
from tests.web.test_browser import draw, settled_label, wait_until

pytestmark = pytest.mark.browser

#: what digitnet explain prints, on the page: every line of its text and every sentence, in order
PAGE_LINES = ("() => Array.from(document.querySelectorAll('[data-panel=inside] .steps .line, "
              "[data-panel=inside] .steps .sentence')).map((e) => e.textContent)")


@pytest.fixture(scope="module", params=INSIDE_KINDS)
def site(request, inside_runs):
    """A server of the network ``request.param`` and a Chromium page on it."""
    chromium = require_chromium()
    require_module("uvicorn")
    from playwright.sync_api import sync_playwright

    from digitnet.web.server import create_app

    run = inside_runs[request.param]
    with serve(create_app(run)) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto(url + "/")
        wait_until(page, "() => document.getElementById('probabilities').children.length === 10")
        page.js_errors = errors
        yield {"kind": request.param, "url": url, "page": page, "run": run}
        browser.close()


def settled(page) -> dict:
    """The Inside tab's answer once no request is pending."""
    wait_until(page, "() => !window.digitnetInside.busy && "
                     "['done', 'error'].includes(document.querySelector('[data-panel=inside]').dataset.state)", 60)
    assert page.locator('[data-panel="inside"]').get_attribute("data-state") == "done", \
        page.locator("#inside-status").inner_text()
    return page.evaluate("() => window.digitnetInside.result")


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url + "/api/explain", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def assert_in_order(shown: list[str], printed: str) -> None:
    remaining = [line.strip() for line in printed.splitlines()]
    for line in shown:
        assert line.strip() in remaining, f"{line!r} is not a line digitnet explain prints (in this order)"
        remaining = remaining[remaining.index(line.strip()) + 1:]


def test_draw_open_inside_pick_a_label_and_see_the_backward_pass(site, tmp_path):
    page = site["page"]
    page.click('[data-tab="draw"]')
    page.click("#clear")
    draw(page, STROKES["7"])
    settled_label(page)
    page.click('[data-tab="inside"]')
    assert page.locator("#inside-canvas-slot #canvas").count() == 1       # the drawing came along
    first = settled(page)
    assert first["source"] == {"kind": "image"} and not first["label_given"]
    assert page.locator("#inside-label").input_value() == ""              # the predicted class

    label = (first["predicted"] + 3) % 10
    page.select_option("#inside-label", str(label))
    result = settled(page)
    assert result["label"] == label and result["label_given"]
    model = load_model(site["run"])
    # every layer forward, then every layer backward (and the loss's gradient), then the step
    assert page.locator("#inside-forward .step").count() == len(model.model.layers)
    assert page.locator("#inside-backward .step").count() == len(model.model.layers) + 1
    assert page.locator('[data-step="loss"] h3').inner_text() == f"Loss for the label {label}"
    assert page.locator("#inside-output li.truth .name").inner_text() == str(label)
    update = result["update"]
    assert page.locator('[data-step="update"] .line.big').text_content() == update["text"]["result"]
    assert update["p_true_after"] > update["p_true_before"]          # one step towards the picked label

    # the same numbers as the API's for the same image, label and rate
    data_url = page.evaluate("() => document.getElementById('canvas').toDataURL('image/png')")
    api = post(site["url"], {"image": data_url, "label": label, "lr": 0.1})
    for key in ("probabilities", "forward", "loss", "backward", "update", "image", "unit"):
        assert result[key] == api[key], key
    shown = page.evaluate(PAGE_LINES)
    assert len(shown) > 10
    assert [f"{100 * p:.2f}%" for p in api["probabilities"]] == page.locator("#inside-output .pct").all_inner_texts()
    # ... and as digitnet explain's for the image the network saw (what the command prints for it)
    image = np.array(api["image"], dtype=np.uint8)
    e = explain_image(load_model(site["run"], kernels="reference").model, image, label, lr=0.1,
                      classes=model.classes, training=model.training)
    printed = format_text(e, "the drawing")
    assert_in_order(shown, printed)
    for k, p in enumerate(api["probabilities"]):
        assert f"{100 * p:6.2f}%" in printed.splitlines()[printed.splitlines().index("== Output ==") + 2 + k]
    assert page.locator("#inside-input-text").text_content() in printed
    page.screenshot(path=str(tmp_path / f"inside-{site['kind']}.png"), full_page=True)
    assert page.js_errors == []

    # back on the Draw tab: the same drawing, read as before
    page.click('[data-tab="draw"]')
    assert page.locator('[data-panel="draw"] #canvas').count() == 1
    assert settled_label(page) == page.locator("#prediction-label").inner_text().strip() != "–"


def test_a_test_image_or_a_file_on_the_page(site, capsys, tmp_path):
    """Pick test image 12 on the page: the lines shown are those `digitnet explain RUN --image 12` prints.
    Then upload a file: the page shows the API's answer for it."""
    from digitnet.cli import main

    page = site["page"]
    page.click('[data-tab="inside"]')
    page.check('input[name="inside-source"][value="test"]')
    page.fill("#inside-test-index", "12")
    page.fill("#inside-lr", "0.3")
    result = settled(page)
    assert result["source"]["kind"] == "test" and result["source"]["index"] == 12
    assert result["label"] == result["source"]["label"]                  # its own label
    assert page.locator("#inside-canvas-slot #canvas").count() == 0      # no drawing needed
    capsys.readouterr()
    assert main(["explain", str(site["run"]), "--image", "12", "--lr", "0.3"]) == 0
    printed = capsys.readouterr().out
    assert_in_order(page.evaluate(PAGE_LINES), printed)
    assert page.locator('[data-step="update"] .line.big').text_content() in printed

    # a file instead: the answer is the API's for that file
    images, _ = mnist_split("test")
    photo = tmp_path / "digit.png"
    photo.write_bytes(encode(render(images[12])))
    page.set_input_files("#inside-upload", str(photo))
    wait_until(page, "() => window.digitnetInside.result && window.digitnetInside.result.source.kind === 'image'")
    result = settled(page)
    api = post(site["url"], {"image": "data:image/png;base64," + base64.b64encode(photo.read_bytes()).decode(),
                             "lr": 0.3})
    assert result["probabilities"] == api["probabilities"] and result["backward"] == api["backward"]
    assert page.locator("#inside-label").input_value() == "" and not result["label_given"]
    assert page.js_errors == []


def test_clicking_a_unit_and_choosing_one_with_the_keyboard(site):
    page = site["page"]
    page.click('[data-tab="inside"]')
    page.check('input[name="inside-source"][value="test"]')
    page.fill("#inside-test-index", "3")
    before = settled(page)
    layer = before["unit_layers"][0]
    # keyboard: the layer and unit fields
    page.select_option("#inside-unit-layer", str(layer["layer"]))
    page.fill("#inside-unit-index", "2")
    page.press("#inside-unit-index", "Enter")
    page.locator("#inside-unit-index").blur()
    result = settled(page)
    assert (result["unit"]["layer"], result["unit"]["index"]) == (layer["layer"], 2)
    assert page.locator("#inside-unit-what").inner_text() == result["unit"]["what"]
    assert page.locator("#inside-unit-weights img, #inside-unit-weights .cells").count() == 1
    # the mouse: a cell (MLP) or a tile (CNN) of the first layer's output is that unit
    target = page.locator('[data-step="forward-0"] .view .cells span').nth(1)
    if site["kind"] == "cnn":
        image = page.locator('[data-step="forward-0"] .view img')
        box = image.bounding_box()
        tiles = before["forward"][0]["output"]["picture"]
        scale = box["width"] / tiles["width"]
        page.mouse.click(box["x"] + (29 + 14) * scale, box["y"] + 14 * scale)   # the second tile: channel 1
    else:
        target.click()
    result = settled(page)
    assert (result["unit"]["layer"], result["unit"]["index"]) == (layer["layer"], 1)
    assert page.js_errors == []


def test_drawing_in_the_inside_tab_updates_it_without_a_request_per_move(site):
    page = site["page"]
    page.click('[data-tab="inside"]')
    page.check('input[name="inside-source"][value="drawing"]')
    page.click("#inside-clear")
    wait_until(page, "() => !window.digitnetInside.busy && document.getElementById('inside-status').textContent"
                     " === 'draw a digit (or pick a test image)'")
    assert page.locator("#inside-forward .step").count() == 0
    before = page.evaluate("() => window.digitnetInside.requests")
    draw(page, STROKES["1"])                            # ~8 mouse moves, drawn on the canvas in this tab
    result = settled(page)
    sent = page.evaluate("() => window.digitnetInside.requests") - before
    assert 1 <= sent <= 4                               # debounced: not one request per mouse move
    assert "explained in" in page.locator("#inside-status").inner_text()
    # the Draw tab read the same drawing meanwhile
    page.click('[data-tab="draw"]')
    top = page.evaluate("() => Array.from(document.querySelectorAll('#probabilities li'))"
                        ".findIndex((li) => li.classList.contains('top'))")
    assert settled_label(page) == result["classes"][top]
    assert page.js_errors == []
