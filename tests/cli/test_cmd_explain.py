import html
import re

import numpy as np
import pytest

from digitnet.cli import main
from digitnet.config import TrainConfig
from digitnet.data.batches import images_to_inputs
from digitnet.explain import substitute
from digitnet.io import load_model
from digitnet.nn.registry import entry
from digitnet.runs import run_training
from tests.cli.conftest import run_cli
from tests.web.support import encode, render


@pytest.fixture(scope="module")
def model(small_run):
    return load_model(small_run).model


def probabilities_printed(text: str) -> np.ndarray:
    """The ten 'class  percent%' rows of the Output section, as fractions."""
    section = text.split("== Output ==")[1].split("== Loss ==")[0]
    rows = re.findall(r"^\s+(\d)\s+([\d.]+)%", section, flags=re.M)
    assert [int(k) for k, _ in rows] == list(range(10))
    return np.array([float(p) / 100 for _, p in rows])


def test_explain_a_test_image_as_a_user_runs_it(small_run, model, mnist_test):
    result = run_cli("explain", small_run, "--image", "3")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # the shapes of every step of a 784-32-10 network
    for text in ("x  the input: 784 numbers in [0, 1]", "z1 = x @ weights + bias",
                 "[1, 784] @ [784, 32] + [32] -> [1, 32]", "a1 = max(z1, 0)", "[1, 32] -> [1, 32]",
                 "[1, 32] @ [32, 10] + [10] -> [1, 10]", "weights [784, 32]", "p = softmax(z2)  [10], sums to 1.0000",
                 "grad_z2 = (softmax(z2) - q) / B  [1, 10]", "(label_smoothing 0, reduction mean)",
                 "grad_weights = a1.T @ grad_z2  [32, 10]", "grad_bias = sum_b grad_z2  [10]",
                 "grad_z1 = grad_a1 * (a1 > 0)  [1, 32]", "grad_weights = x.T @ grad_z1  [784, 32]",
                 "grad_x = grad_z1 @ weights.T  [1, 784]", entry("optimizer", "sgd").formula,
                 "(lr 0.1, momentum 0, nesterov False, weight_decay 0)", "layers.0.weights"):
        assert text in out, text
    # the printed probabilities are the model's, they sum to 1, and the true label is marked
    x = images_to_inputs(mnist_test.images[3:4], (784,))
    expected = model.predict_proba(x)[0]
    printed = probabilities_printed(out)
    np.testing.assert_allclose(printed, expected, atol=6e-5)        # printed with 2 decimals in percent
    assert printed.sum() == pytest.approx(1.0, abs=6e-4)
    label = int(mnist_test.labels[3])
    marked = re.search(rf"^\s+{label}\s+[\d.]+%.*<- .*true label", out, flags=re.M)
    assert marked, out
    # the loss line is -log of the true class's probability
    loss = float(re.search(rf"L = -log p\[{label}\] = -log [\d.]+ = ([\d.]+)", out).group(1))
    assert loss == pytest.approx(-np.log(expected[label]), abs=1e-4)
    # how many ReLUs are off, as in the real hidden layer
    hidden = model.forward_all(x)[2][0]
    assert f"{np.count_nonzero(hidden == 0)} of 32 ReLUs are off" in out
    assert "(the step was taken on a copy: the model file is unchanged)" in out


def test_explain_own_image_and_html_page(small_run, mnist_test, tmp_path, capsys):
    digit = tmp_path / "digit.png"
    digit.write_bytes(encode(render(mnist_test.images[0], invert=True)))   # dark ink on white paper, 280x280
    page = tmp_path / "explain.html"
    assert main(["explain", str(small_run), "--file", str(digit), "--html", str(page), "--lr", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "no label given: the predicted class" in out
    assert "One SGD step on this image (lr 0.05)" in out
    assert out.rstrip().endswith(f"wrote {page}")
    text = page.read_text()
    assert text.startswith("<!doctype html>") and text.rstrip().endswith("</html>")
    assert "[1, 784] @ [784, 32] + [32] -&gt; [1, 32]" in text
    assert text.count("data:image/png;base64,") >= 4              # input, weights, gradients as pictures
    assert text.count('<span style="background:rgb(') >= 32 + 10    # vectors as coloured cells
    assert "http://" not in text and "https://" not in text        # self-contained
    assert [p.name for p in tmp_path.iterdir()] == sorted(["digit.png", "explain.html"])  # atomic write


def test_explain_html_for_a_test_image(small_run, tmp_path, capsys):
    page = tmp_path / "seven.html"
    assert main(["explain", str(small_run), "--html", str(page), "--values", "3"]) == 0
    out = capsys.readouterr().out
    assert "test image 0 of mnist" in out and re.search(r"z1\[0, :3\] = \[\s*\S+\s+\S+\s+\S+ \.\.\.\]", out)
    assert re.search(r"^\s+7\s+[\d.]+%.*true label", out, flags=re.M)
    assert "Loss for the label 7" in page.read_text()


@pytest.mark.parametrize("args, message", [
    (["--image", "10000"], "--image 10000 is outside the mnist test set (0-9999)"),
    (["--image", "-1"], "outside the mnist test set"),
    (["--file", "no-such-digit.png"], "no-such-digit.png"),
    (["--label", "10"], "label 10 is outside the model's classes 0-9"),
])
def test_explain_errors_are_one_line(small_run, args, message, tmp_path, capsys):
    assert main(["explain", str(small_run), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("digitnet explain: error: ") and message in err
    assert "\n" not in err


def test_explain_flag_errors(small_run, tmp_path):
    result = run_cli("explain", small_run, "--image", "1", "--file", "x.png")
    assert result.returncode == 2 and "not allowed with argument" in result.stderr
    result = run_cli("explain", tmp_path / "missing.safetensors")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "not found" in result.stderr


def test_explain_a_gelu_network_trained_with_rmsprop(mnist_path, tmp_path, capsys):
    """A registered activation and optimizer reach ``digitnet explain`` without explain code of their own."""
    config = TrainConfig().replace(arch="784-16-10", activation="gelu", optimizer="rmsprop", lr=0.003, epochs=1,
                                   limit_train=500, batch_size=50)
    run_training(config, tmp_path / "gelu", quiet=True, log=lambda message: None)
    page = tmp_path / "gelu.html"
    assert main(["explain", str(tmp_path / "gelu"), "--image", "1", "--html", str(page)]) == 0
    out = capsys.readouterr().out
    gelu = entry("activation", "gelu")
    forward = substitute(gelu.formula, {"x": "z1", "y": "a1"})
    backward = substitute(gelu.gradient, {"x": "z1", "y": "a1"})
    assert "layer 1  gelu_0  GELU" in out and f"    {forward}\n" in out
    assert f"    {backward}  [1, 16]  norm " in out
    text = page.read_text()
    assert html.escape(forward) in text and html.escape(backward) in text
