import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from digitnet.atomic import WriteError
from digitnet.data.batches import images_to_inputs
from digitnet.errors import ConfigError
from digitnet.io import load_model
from digitnet.report import write_report
from tests.conftest import require_chromium
from tests.viz.support import tiny_run

FAST = {"robustness": 200, "embedding": 300}


class _Page(HTMLParser):
    """Collects every <img>, every id, every link target and the visible text."""

    def __init__(self):
        super().__init__()
        self.images, self.ids, self.links, self.text = [], set(), [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.images.append(attrs)
        if tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])
        if tag in ("link", "script") and (attrs.get("href") or attrs.get("src")):
            self.links.append(attrs.get("href") or attrs.get("src"))

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def run_dir(mnist_path, tmp_path_factory):
    return tiny_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def report(run_dir, mnist_test):
    path = write_report(run_dir, dpi=40, test=mnist_test.head(1000), counts=FAST)
    return path, path.read_text()


def _parse(text):
    page = _Page()
    page.feed(text)
    return page


def test_report_is_written_into_the_run_directory(report, run_dir):
    path, text = report
    assert path == run_dir / "report.html"
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")


def test_every_image_is_an_embedded_valid_png_of_its_stated_size(report):
    page = _parse(report[1])
    assert len(page.images) == 14  # every MLP picture (all kinds but the two CNN ones)
    for attrs in page.images:
        src = attrs["src"]
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        image = Image.open(io.BytesIO(raw))
        image.verify()
        image = Image.open(io.BytesIO(raw))
        assert image.format == "PNG"
        assert image.size == (int(attrs["width"]), int(attrs["height"]))
        assert attrs["alt"]


def test_report_is_self_contained(report):
    page = _parse(report[1])
    external = [link for link in page.links if not link.startswith("#")]
    assert external == []
    assert all(link[1:] in page.ids for link in page.links)  # every table-of-contents link has its section
    assert "http://" not in report[1] and "https://" not in report[1]


def test_metrics_table_holds_the_real_numbers(report, run_dir, mnist_test):
    text = report[1]
    data = mnist_test.head(1000)
    model = load_model(run_dir).model
    predicted = model.predict(images_to_inputs(data.images, model.input_shape))
    accuracy = float(np.mean(predicted == data.labels))
    wrong = int(np.count_nonzero(predicted != data.labels))
    assert f"Accuracy <b>{accuracy:.4f}</b> ({wrong:,} wrong of 1,000)" in text
    for digit in range(10):
        is_digit = data.labels == digit
        recall = np.mean(predicted[is_digit] == digit)
        support = int(is_digit.sum())
        assert re.search(rf"<td class='left'>{digit}</td><td>[0-9.]+</td><td>{recall:.4f}</td><td>[0-9.]+</td>"
                         rf"<td>{support:,}</td>", text), digit


def test_configuration_history_and_skipped_pictures_are_listed(report, run_dir):
    page = _parse(report[1])
    text = " ".join(page.text)
    assert {"metrics", "config", "history", "skipped", "curves", "confusion", "robustness"} <= page.ids
    assert "784-32-16-10" in text and "adam" in text
    assert "Convolution filters" in text and "convolutional network" in text  # why the CNN pictures are absent
    assert text.count("digitnet plot ") >= 14


def test_a_bare_model_file_lists_the_run_dir_pictures_as_not_drawn(run_dir, mnist_test, tmp_path):
    out = write_report(run_dir / "model.safetensors", tmp_path / "small.html", dpi=30, test=mnist_test.head(300),
                       kinds=["curves", "confusion", "weight-change"])
    page = _parse(out.read_text())
    assert len(page.images) == 1 and page.images[0]["alt"] == "Confusion matrix"
    text = " ".join(page.text)
    assert "needs a run directory with history.json" in text
    assert "needs a run directory with initial.safetensors" in text
    assert "history" not in page.ids  # no training history table either
    with pytest.raises(ConfigError, match="unknown picture"):
        write_report(run_dir, tmp_path / "x.html", test=mnist_test.head(300), kinds=["pie"])


def test_report_write_errors_are_clean(run_dir, mnist_test, tmp_path):
    with pytest.raises(WriteError, match="does not exist"):
        write_report(run_dir, tmp_path / "no" / "report.html", dpi=30, test=mnist_test.head(300), counts=FAST)


@pytest.mark.browser
def test_report_opens_in_a_headless_browser_with_no_missing_image(report):
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page()
            failed = []
            page.on("requestfailed", lambda request: failed.append(request.url))
            page.goto(report[0].as_uri(), wait_until="load")
            widths = page.evaluate("Array.from(document.images).map(img => img.complete ? img.naturalWidth : 0)")
            title = page.title()
        finally:
            browser.close()
    assert len(widths) == 14 and all(w > 0 for w in widths), widths
    assert failed == []
    assert title.startswith("digitnet report: ")
