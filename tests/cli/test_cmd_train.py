import json

import numpy as np
import pytest

from digitnet.io import load_model
from tests.cli.conftest import run_cli


def test_train_writes_a_complete_run_directory(small_run):
    for name in ("model.safetensors", "initial.safetensors", "history.json", "config.json",
                 "checkpoint.safetensors"):
        assert (small_run / name).exists(), name
    history = json.loads((small_run / "history.json").read_text())
    assert history["epoch"] == [0, 1]
    assert all(v is not None for v in history["val_accuracy"])
    config = json.loads((small_run / "config.json").read_text())
    assert config["arch"] == "784-32-10" and config["limit_train"] == 5000 and config["optimizer"] == "adam"
    loaded = load_model(small_run)
    assert loaded.metrics["test_count"] == 10000
    assert loaded.metrics["test_accuracy"] > 0.85  # 2 epochs on 5k images
    initial = load_model(small_run / "initial.safetensors").model.state_dict()
    final = loaded.model.state_dict()
    assert not np.array_equal(initial["layers.0.weights"], final["layers.0.weights"])


@pytest.mark.slow
def test_train_prints_test_accuracy_and_same_seed_is_bit_identical(mnist_path, tmp_path):
    args = ["train", "--preset", "seed-002", "--epochs", "1", "--limit-train", "3000", "--no-progress", "--seed", "5"]
    first = run_cli(*args, "--out", tmp_path / "a")
    second = run_cli(*args, "--out", tmp_path / "b")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "test accuracy:" in first.stdout
    assert "epoch 1/1: loss" in first.stderr
    a = load_model(tmp_path / "a").model.state_dict()
    b = load_model(tmp_path / "b").model.state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    ha = json.loads((tmp_path / "a" / "history.json").read_text())
    hb = json.loads((tmp_path / "b" / "history.json").read_text())
    assert ha["train_loss"] == hb["train_loss"]


def test_help_names_each_preset_after_what_it_is():
    result = run_cli("train", "--help")
    assert result.returncode == 0
    assert "seed-002: 784-128-64-10 ReLU, SGD lr 0.1, batch 128, 10 epochs" in result.stdout
    for flag in ("--preset", "--arch", "--optimizer", "--lr", "--epochs", "--batch-size", "--l2", "--dropout",
                 "--schedule", "--val-split", "--seed", "--dataset", "--limit-train", "--out", "--resume",
                 "--kernels"):
        assert flag in result.stdout
    assert "reference: the readable textbook layers in digitnet/nn" in " ".join(result.stdout.split())


@pytest.mark.parametrize("args, message", [
    (["--preset", "nope"], "unknown preset"),
    (["--arch", "784-x-10"], "bad architecture"),
    (["--lr", "-1"], "expected a finite number > 0"),
    (["--dropout", "1.5"], "fraction"),
    (["--optimizer", "lion"], "invalid choice"),
    (["--val-split", "2"], "fraction"),
    (["--kernels", "bogus"], "argument --kernels: invalid choice: 'bogus'"),
])
def test_bad_flags_give_one_clear_line_and_exit_2(args, message, tmp_path):
    result = run_cli("train", *args, "--out", tmp_path / "r", "--epochs", "1", "--limit-train", "100")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_resume_of_a_missing_run_is_a_clear_error(tmp_path):
    result = run_cli("train", "--resume", tmp_path / "missing")
    assert result.returncode == 2 and "no checkpoint.safetensors to resume from" in result.stderr


def test_resume_refuses_other_settings(tmp_path):
    result = run_cli("train", "--resume", tmp_path, "--lr", "0.1")
    assert result.returncode == 2 and "drop lr" in result.stderr


def test_a_bad_kernels_variable_is_one_clear_line_and_exit_2(tmp_path):
    result = run_cli("train", "--arch", "784-16-10", "--epochs", "1", "--out", tmp_path / "r",
                     env={"DIGITNET_KERNELS": "bogus"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "digitnet train: error: unknown kernels 'bogus' (from $DIGITNET_KERNELS): choose fast or reference"]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_reference_kernels_train_without_speed_up(how, mnist_path, tmp_path, monkeypatch, capsys):
    import digitnet.kernels
    from digitnet.cli import main

    def refuse(*args):
        raise AssertionError("speed_up was called")

    monkeypatch.setattr(digitnet.kernels, "speed_up", refuse)
    monkeypatch.setenv("DIGITNET_DATA", str(mnist_path.parent))
    flags = ["--kernels", "reference"] if how == "flag" else []
    if how == "environment":
        monkeypatch.setenv("DIGITNET_KERNELS", "reference")
    code = main(["train", "--arch", "784-16-10", "--epochs", "1", "--limit-train", "500", "--no-progress",
                 "--out", str(tmp_path / "r"), *flags])
    assert code == 0, capsys.readouterr().err
    assert "kernels" not in json.loads((tmp_path / "r" / "config.json").read_text())



def test_a_bad_threads_setting_is_one_clear_line_and_exit_2(tmp_path):
    result = run_cli("train", "--arch", "784-16-10", "--epochs", "1", "--out", tmp_path / "r",
                     env={"DIGITNET_THREADS": "two"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "digitnet train: error: threads must be a whole number >= 1, got 'two' (from $DIGITNET_THREADS)"]
    assert not (tmp_path / "r").exists()
    flag = run_cli("train", "--arch", "784-16-10", "--threads", "0", "--out", tmp_path / "r")
    assert flag.returncode == 2 and "--threads: expected a whole number >= 1, got 0" in flag.stderr


def test_threads_change_the_time_not_the_weights(mnist_path, tmp_path, monkeypatch, capsys):
    """``--threads 1`` and ``--threads 2`` train a small CNN to the same bits in every weight."""
    from digitnet.cli import main

    monkeypatch.setenv("DIGITNET_DATA", str(mnist_path.parent))
    for threads in ("1", "2"):
        code = main(["train", "--preset", "cnn-fast", "--epochs", "1", "--limit-train", "384", "--no-progress",
                     "--threads", threads, "--out", str(tmp_path / threads)])
        assert code == 0, capsys.readouterr().err
    from digitnet.io import read_safetensors

    one, two = (read_safetensors(tmp_path / t / "model.safetensors").tensors for t in ("1", "2"))
    assert one.keys() == two.keys() and len(one) == 8
    for name in one:
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)


def test_every_registered_choice_is_offered_by_train_help():
    """The flags' choices come from the registry: a new activation or optimizer appears without a CLI edit."""
    from digitnet.nn.registry import names

    text = " ".join(run_cli("train", "--help").stdout.split())
    flags = (("activation", "hidden", "--activation"), ("optimizer", None, "--optimizer"), ("loss", None, "--loss"),
             ("schedule", None, "--schedule"), ("initializer", None, "--init"))
    for kind, tag, flag in flags:
        offered = text.split(f"{flag} {{", 1)[1].split("}", 1)[0].split(",")
        assert offered == names(kind, tag), flag
    assert "gelu: y = 0.5 * x * (1 + tanh(u))" in text and "rmsprop: v = alpha * v" in text


@pytest.mark.slow
def test_gelu_rmsprop_and_summed_loss_train_from_the_command_line(mnist_path, tmp_path):
    result = run_cli("train", "--arch", "784-32-10", "--activation", "gelu", "--optimizer", "rmsprop", "--lr", "0.001",
                     "--loss-reduction", "sum", "--epochs", "1", "--limit-train", "3000", "--no-progress",
                     "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    loaded = load_model(tmp_path / "run")
    assert [layer.layer_type for layer in loaded.model.layers] == ["Dense", "GELU", "Dense"]
    assert (loaded.training["optimizer"], loaded.training["loss_reduction"]) == ("rmsprop", "sum")
    assert loaded.metrics["test_accuracy"] > 0.8


def test_bad_registry_choices_are_one_line_errors():
    result = run_cli("train", "--activation", "swish")
    assert result.returncode == 2 and "invalid choice: 'swish'" in result.stderr and "gelu" in result.stderr
    assert "Traceback" not in result.stderr
