"""The Train tab in a real headless Chromium: start training, watch the curve grow, change lr, stop, draw."""

from __future__ import annotations

import pytest

from tests.conftest import require_chromium, require_module
from tests.web.strokes import STROKES
from tests.web.support import serve
from tests.web.test_browser import draw, wait_until

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(loaded_model, mnist_path):
    """A server of its own (its model gets replaced by the one trained here) on 127.0.0.1 and a free port."""
    require_module("uvicorn")
    from digitnet.web.server import create_app

    app = create_app(loaded_model)
    with serve(app) as url:
        yield url, app
        manager = app.state.training
        if manager.job is not None and manager.job.state in ("loading", "running", "paused", "stopping"):
            manager.stop()
        manager.wait(timeout=60)


@pytest.fixture
def page(server):
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto(server[0] + "/")
        wait_until(page, "() => document.getElementById('probabilities').children.length === 10")
        page.js_errors = errors
        yield page
        browser.close()


def training(page, field: str):
    return page.evaluate(f"() => window.digitnetTraining.{field}")


def line_pixels(page, canvas_id: str) -> int:
    """Pixels of the training curve's colour (#4f46e5) drawn on a chart canvas."""
    return page.evaluate(
        "(id) => { const c = document.getElementById(id); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 0; i < d.length; i += 4) {"
        " if (Math.abs(d[i] - 79) < 40 && Math.abs(d[i + 1] - 70) < 40 && d[i + 2] > 190 && d[i + 3] > 200) n++; }"
        " return n; }", canvas_id)


def test_train_tab_trains_live_then_draw_uses_the_new_network(page, server, tmp_path):
    page.click('[data-tab="train"]')
    assert page.locator('[data-panel="train"]').is_visible()
    assert not page.locator('[data-panel="draw"]').is_visible()
    assert line_pixels(page, "train-loss-chart") == 0

    page.fill("#train-hidden", "32")
    assert page.locator("#train-arch").inner_text() == "network: 784 → 32 → 10"
    page.fill("input[name=epochs]", "10")
    page.fill("input[name=limit_train]", "2000")
    page.select_option("select[name=step_delay_ms]", "100")     # slow motion: about 3 s an epoch
    page.click("#train-start")
    wait_until(page, "() => window.digitnetTraining.state === 'running' && window.digitnetTraining.points > 0", 60)
    assert page.locator("#train-start").is_disabled()

    # the curve grows while we watch, for a few epochs
    seen = [training(page, "points")]
    for _ in range(2):
        wait_until(page, f"() => window.digitnetTraining.points > {seen[-1]}", 60)
        seen.append(training(page, "points"))
    wait_until(page, "() => window.digitnetTraining.epochs >= 2", 120)
    seen.append(training(page, "points"))
    assert seen == sorted(seen) and seen[-1] > seen[0]
    assert page.locator("#train-loss-chart").get_attribute("data-points") == str(training(page, "points"))
    assert line_pixels(page, "train-loss-chart") > 50 and line_pixels(page, "train-accuracy-chart") > 50
    assert page.locator("#train-epochs tr").count() >= 3                 # a header and two epochs
    assert page.locator("#train-weights").is_visible()
    assert "epoch" in page.locator("#train-position").inner_text()

    # a new learning rate while it trains
    page.fill("#train-live-lr", "0.01")
    page.click("#train-set-lr")
    wait_until(page, "() => document.getElementById('train-status').textContent.includes('learning rate set to 0.01')")
    page.screenshot(path=str(tmp_path / "training.png"), full_page=True)
    assert (tmp_path / "training.png").stat().st_size > 20_000

    page.click("#train-stop")
    wait_until(page, "() => window.digitnetTraining.state === 'stopped'", 60)
    assert page.locator("#train-result").is_visible()
    assert "Test accuracy" in page.locator("#train-result-text").inner_text()
    stopped_at = training(page, "points")
    assert stopped_at >= seen[-1]
    epochs_done = training(page, "epochs")
    assert 2 <= epochs_done < 10
    wait_until(page, "() => document.getElementById('model-badge').textContent.startsWith('trained on this page')")
    assert page.locator("#train-start").is_enabled()

    # the Draw tab now reads with the freshly trained 784-32-10 network
    page.click("#train-draw")
    assert page.locator('[data-panel="draw"]').is_visible()
    draw(page, STROKES["7"])
    wait_until(page, "() => !window.digitnet.busy && document.getElementById('prediction').dataset.state === 'done'")
    assert page.locator("#activations .cell").count() == 32
    page.screenshot(path=str(tmp_path / "draw-after-training.png"))
    assert training(page, "points") == stopped_at
    assert page.js_errors == []


def test_train_tab_offers_every_registered_activation_and_optimizer(page):
    """The selects are built from GET /api/train/options: GELU and RMSprop are there with no web code of their own."""
    from digitnet.nn.registry import entry, names

    page.click('[data-tab="train"]')
    wait_until(page, "() => window.digitnetTraining.optionsLoaded")
    values = page.evaluate("(name) => Array.from(document.querySelector(`select[name=${name}]`).options)"
                           ".map((o) => [o.value, o.text])", "activation")
    assert [v for v, _ in values] == names("activation", tag="hidden") and ["gelu", "GELU"] in values
    values = page.evaluate("(name) => Array.from(document.querySelector(`select[name=${name}]`).options)"
                           ".map((o) => [o.value, o.text])", "optimizer")
    assert [v for v, _ in values] == names("optimizer") and ["rmsprop", "RMSprop"] in values
    assert page.locator("select[name=activation]").input_value() == "relu"       # the server's default
    assert page.locator("select[name=optimizer]").input_value() == "momentum"
    # choosing them shows their registered formulas (and the optimizer's settings with their ranges)
    page.select_option("select[name=activation]", "gelu")
    page.select_option("select[name=optimizer]", "rmsprop")
    formulas = page.locator("#train-formulas").inner_text()
    assert entry("activation", "gelu").formula in formulas and entry("optimizer", "rmsprop").formula in formulas
    assert "alpha [0, 1) (default 0.99)" in formulas
    assert page.locator("input[name=epochs]").get_attribute("max") == "100"
    assert page.js_errors == []
