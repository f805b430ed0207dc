"""The speed benchmark runs end to end (--quick) and reports every field; its PyTorch twin is exact.

No timing is asserted anywhere: the figures depend on the machine and its load.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from digitnet.bench import (
    CONFIGS,
    DigitnetRun,
    TorchRun,
    _require,
    build_digitnet_model,
    data_rng,
    matmul_plan,
    plan_flops,
    torch_model_from,
    torch_optimizer_from,
    train_config,
)
from digitnet.cli import main as cli_main
from digitnet.cli.cmd_bench import main
from digitnet.config import build_optimizer, build_schedule, load_preset
from digitnet.data.dataset import Dataset
from digitnet.errors import ConfigError
from digitnet.kernels import fast_twin
from digitnet.kernels.parallel import ENV_VAR as THREADS_VAR
from digitnet.nn import SGD
from digitnet.nn.adam import Adam
from digitnet.nn.batchnorm import BatchNorm
from tests.conftest import require_module

STATS = {"seconds", "median", "p10", "min", "gflops"}


def _check_stats(stats, epochs):
    assert STATS <= set(stats)
    assert len(stats["seconds"]) == epochs and all(s > 0 for s in stats["seconds"])
    assert stats["p10"] <= stats["median"] and stats["min"] <= stats["p10"]
    assert stats["gflops"] > 0 and math.isfinite(stats["gflops"])


@pytest.mark.torch
def test_quick_benchmark_writes_every_field(tmp_path, mnist_path):
    require_module("torch")
    require_module("sklearn")
    out = tmp_path / "results"
    code = main(["mlp-seed-002", "--quick", "--out", str(out), "--data-dir", str(mnist_path.parent),
                 "--train-memory", "mlp-best"])
    assert code == 0
    result = json.loads((out / "mlp-seed-002.json").read_text())
    assert result["config"] == "mlp-seed-002" and result["quick"] is True and result["epochs"] == 2
    assert set(result["frameworks"]) == {"digitnet", "torch", "sklearn"}
    # 784-128-64-10: forward and weight-gradient products for three layers, input gradients for two
    per_image = 2 * (2 * (784 * 128 + 128 * 64 + 64 * 10) + (128 * 64 + 64 * 10))
    assert result["flops_per_epoch"] == per_image * result["train_images"]
    for stats in result["frameworks"].values():
        _check_stats(stats, 2)
        assert 0.5 < stats["test_accuracy"] <= 1.0          # 2 epochs on 2,048 images: well above chance
        assert stats["peak_rss_mb"] > 10
    _check_stats(result["matmul_bound"], 2)
    # the same weights and the same batches: the two frameworks end up with nearly the same network
    ratios = result["ratios"]
    assert abs(ratios["accuracy_difference_points"]) <= 1.0
    for key in ("digitnet_over_torch_median", "digitnet_over_torch_p10", "digitnet_over_bound_median",
                "digitnet_over_bound_p10"):
        assert ratios[key] > 0
    inference = result["inference"]
    for key in ("digitnet_one_image_ms", "digitnet_test_set_s", "torch_one_image_ms", "torch_test_set_s"):
        assert inference[key] > 0
    assert inference["test_images"] == result["test_images"]
    machine = result["machine"]
    assert machine["cores"] >= 1 and machine["numpy"] == np.__version__ and "openblas_env" in machine
    assert result["versions"]["torch"] and result["versions"]["sklearn"]
    assert len(result["load_average"]["before"]) == 3
    memory = json.loads((out / "train-memory-mlp-best.json").read_text())
    assert memory["preset"] == "mlp-best" and memory["peak_rss_mb"] > 10 and "error" not in memory
    table = (out / "bench.md").read_text()
    assert "| 784-128-64-10 ReLU MLP" in table and "matmuls alone (lower bound)" in table and "| digitnet |" in table
    assert "digitnet train --preset mlp-best" in table


@pytest.mark.torch
@pytest.mark.parametrize(("name", "epochs"), [("cnn-fast", 2), ("cnn-best", 1)])
def test_quick_benchmark_of_a_preset_records_its_schedule_and_threads(name, epochs, tmp_path, mnist_path,
                                                                     monkeypatch):
    torch = require_module("torch")
    monkeypatch.delenv(THREADS_VAR, raising=False)
    torch_threads = torch.get_num_threads()
    out = tmp_path / "results"
    assert main([name, "--quick", "--no-memory", "--threads", "1", "--out", str(out),
                 "--data-dir", str(mnist_path.parent)]) == 0
    assert THREADS_VAR not in os.environ and torch.get_num_threads() == torch_threads   # both restored
    result = json.loads((out / f"{name}.json").read_text())
    assert result["config"] == name and result["preset"] == name and result["epochs"] == epochs
    assert result["threads"] == {"digitnet": 1, "torch": 1}
    assert set(result["frameworks"]) == {"digitnet", "torch"}            # no scikit-learn for a CNN
    preset = load_preset(name)
    assert result["optimizer"].startswith(f"Adam lr {preset.lr:g}, cosine schedule")
    assert ("warm-up" in result["optimizer"]) == bool(preset.warmup_epochs)
    for stats in result["frameworks"].values():
        _check_stats(stats, epochs)
        assert 0.0 <= stats["test_accuracy"] <= 1.0 and stats["peak_rss_mb"] is None
    _check_stats(result["matmul_bound"], epochs)
    table = (out / "bench.md").read_text()
    assert f"(the {name} preset), Adam lr" in table and "threads: digitnet 1, PyTorch 1" in table
    assert f"{name}: {epochs} epoch{'s' if epochs > 1 else ''} each on" in table
    assert f"the `{name}` preset as configured" in table
    assert ("augmentation" in table) == (name == "cnn-best")


@pytest.mark.torch
@pytest.mark.parametrize("name", ["cnn", "cnn-5x5", "cnn-fast"])
def test_torch_twin_of_the_cnn_computes_the_same_function(name, rng):
    torch = require_module("torch")
    model = build_digitnet_model(CONFIGS[name])
    net = torch_model_from(model, torch)
    x = rng.random((3, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        theirs = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.forward(x, training=False), theirs, rtol=0, atol=1e-4)


@pytest.mark.torch
def test_torch_twin_of_cnn_best_computes_the_same_function_with_batch_norm(rng):
    """Eval mode with trained-looking weights and running statistics; and in training mode the running
    statistics move alike (PyTorch's momentum convention, the unbiased variance)."""
    torch = require_module("torch")
    model = build_digitnet_model(CONFIGS["cnn-best"])
    norms = [layer for layer in model.layers if isinstance(layer, BatchNorm)]
    assert len(norms) == 2
    for layer in norms:
        c = layer.num_features
        layer.params["gamma"][:] = rng.uniform(0.5, 1.5, c)
        layer.params["beta"][:] = rng.normal(0, 0.2, c)
        layer.buffers["running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
        layer.buffers["running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
    net = torch_model_from(model, torch)
    assert [type(m).__name__ for m in net if "Norm" in type(m).__name__ or "Drop" in type(m).__name__] \
        == ["BatchNorm2d", "BatchNorm2d", "Dropout"]
    x = rng.random((3, 1, 28, 28), dtype=np.float32)
    net.eval()
    with torch.no_grad():
        theirs = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.forward(x, training=False), theirs, rtol=0, atol=1e-5)
    # training mode: dropout comes after both batch norms, so their running statistics must agree
    x = rng.random((8, 1, 28, 28), dtype=np.float32)
    net.train()
    with torch.no_grad():
        net(torch.from_numpy(x))
    model.forward(x, training=True)
    twins = [m for m in net if isinstance(m, torch.nn.BatchNorm2d)]
    for layer, twin in zip(norms, twins, strict=True):
        np.testing.assert_allclose(layer.buffers["running_mean"], twin.running_mean.numpy(), rtol=0, atol=1e-6)
        np.testing.assert_allclose(layer.buffers["running_var"], twin.running_var.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize("kernels", ["fast", "reference"])
def test_torch_adam_with_the_schedule_steps_exactly_as_digitnet(kernels, rng):
    """Given the same gradients, PyTorch's Adam at the rate digitnet's schedule gives (cnn-best's:
    warm-up, then cosine) moves the parameters as digitnet's Adam does, step after step."""
    torch = require_module("torch")
    settings = train_config(CONFIGS["cnn-best"], 2)
    optimizer, schedule = build_optimizer(settings), build_schedule(settings)
    if kernels == "fast":
        optimizer = fast_twin(optimizer)
    params = [rng.standard_normal((6, 5)).astype(np.float32), rng.standard_normal(5).astype(np.float32)]
    twins = [torch.tensor(p, requires_grad=True) for p in params]
    twin = torch_optimizer_from(optimizer, twins, torch)
    batches_per_epoch = 4
    for epoch, batch in [(0, 0), (0, 1), (0, 3), (1, 2)]:      # in warm-up, at its end, in the cosine
        grads = [(rng.standard_normal(p.shape) * 1e-2).astype(np.float32) for p in params]
        lr = schedule(epoch + batch / batches_per_epoch)       # the Trainer's progress
        optimizer.lr = lr
        optimizer.step(list(zip(params, grads, strict=True)))
        for group in twin.param_groups:
            group["lr"] = lr
        for t, g in zip(twins, grads, strict=True):
            t.grad = torch.from_numpy(g.copy())
        twin.step()
        for p, t in zip(params, twins, strict=True):
            np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.torch
def test_torch_twin_takes_the_same_scheduled_adam_steps(rng):
    """cnn-fast on 64 images (one batch per epoch) for 2 epochs of a 2-epoch cosine schedule: the second
    step runs at half the rate, and both frameworks end with the same weights. Except: where the exact
    gradient is 0 (a dead channel), one framework may compute rounding noise of ~1e-9 instead, which Adam
    (eps 1e-8) turns into a step of up to ~lr; so a few weights may differ, by at most lr."""
    torch = require_module("torch")
    data = Dataset(rng.integers(0, 256, (64, 28, 28), dtype=np.uint8), rng.integers(0, 10, 64).astype(np.uint8))
    config = CONFIGS["cnn-fast"]
    ours, theirs = DigitnetRun(config, data, data, epochs=2), TorchRun(config, data, data, epochs=2)
    assert isinstance(theirs.optimizer, torch.optim.Adam)
    group = theirs.optimizer.param_groups[0]
    adam = ours.trainer.optimizer
    assert group["betas"] == (adam.beta1, adam.beta2) and group["eps"] == adam.eps
    start = [p.detach().numpy().copy() for p in theirs.net.parameters()]
    for _ in range(2):
        ours.epoch()
        theirs.epoch()
    assert group["lr"] == ours.trainer.optimizer.lr == pytest.approx(config.lr / 2)
    weights = [w for layer in ours.model.layers for w in (layer.params.get("weights"), layer.params.get("bias"))
               if w is not None]
    for ours_w, start_w, theirs_w in zip(weights, start, theirs.net.parameters(), strict=True):
        theirs_w = theirs_w.detach().numpy()
        if ours_w.ndim == 2:                           # Dense: torch keeps [out, in]
            theirs_w, start_w = theirs_w.T, start_w.T
        assert np.abs(theirs_w - start_w).max() > 0.5 * config.lr     # it moved
        difference = np.abs(ours_w - theirs_w)
        assert np.mean(difference <= 1e-6) > 0.95 and difference.max() <= config.lr


@pytest.mark.parametrize("name", list(CONFIGS))
def test_digitnet_side_starts_from_the_shared_weights_and_order_with_the_benchmark_optimizer(name):
    """What the PyTorch twin copies (build_digitnet_model, data_rng) is what digitnet trains."""
    config = CONFIGS[name]
    data = Dataset(np.zeros((300, 28, 28), np.uint8), np.zeros(300, np.uint8))
    run = DigitnetRun(config, data, data)
    shared = build_digitnet_model(config).state_dict()
    assert all(np.array_equal(value, shared[key]) for key, value in run.model.state_dict().items())
    optimizer = run.trainer.optimizer
    assert run.trainer.batch_size == config.batch_size
    assert np.array_equal(run.trainer.rng.permutation(300), data_rng().permutation(300))
    if config.preset is None:
        assert isinstance(optimizer, SGD)             # its kernel, FastSGD, by default
        assert (optimizer.lr, optimizer.momentum, optimizer.nesterov, optimizer.weight_decay) \
            == (config.lr, config.momentum, config.nesterov, 0.0)
        assert run.trainer.augment is None
        return
    # a preset trains as configured, with the benchmark's epochs (which its schedule spans) and seed
    preset = load_preset(config.preset)
    assert train_config(config, 5) == preset.replace(epochs=5, seed=0)
    assert (config.lr, config.batch_size, config.layers, list(config.input_shape)) \
        == (preset.lr, preset.batch_size, preset.layers, preset.input_shape)
    assert isinstance(optimizer, Adam) and optimizer.weight_decay == 0.0
    assert run.trainer.schedule.epochs == config.epochs and run.trainer.schedule.name == preset.schedule
    assert (run.trainer.augment is not None) == bool(preset.augment)


def test_matmul_plan_of_the_cnn_counts_the_im2col_products(rng):
    plan = matmul_plan(build_digitnet_model(CONFIGS["cnn"]), 4, rng)
    conv1 = 2 * 2 * 32 * 9 * (4 * 28 * 28)                  # forward + weight gradient, no input gradient
    conv2 = 3 * 2 * 64 * 288 * (4 * 14 * 14)
    dense = 3 * 2 * 4 * 3136 * 128 + 3 * 2 * 4 * 128 * 10     # every Dense here has an input gradient
    assert plan_flops(plan) == conv1 + conv2 + dense
    for a, b, out in plan:
        np.matmul(a, b, out=out)                             # every product's shapes fit


def test_matmul_plan_skips_batch_norm_and_dropout(rng):
    """cnn-best is cnn-fast's network plus BatchNorm and Dropout: the same products."""
    best = matmul_plan(build_digitnet_model(CONFIGS["cnn-best"]), 4, rng)
    fast = matmul_plan(build_digitnet_model(CONFIGS["cnn-fast"]), 4, rng)
    assert [(a.shape, b.shape) for a, b, _ in best] == [(a.shape, b.shape) for a, b, _ in fast]
    assert plan_flops(best) == plan_flops(fast) > 0


def test_help_lists_every_configuration_and_threads(capsys):
    with pytest.raises(SystemExit) as done:
        cli_main(["bench", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "--threads N" in text
    for name in CONFIGS:
        assert f"  {name}: " in text
    assert "cnn-best: " in text and "0.5-epoch warm-up, batch 128, 1 epoch" in text


def test_missing_framework_is_a_config_error():
    with pytest.raises(ConfigError, match="pip install"):
        _require("no_such_module_for_digitnet", "PyTorch")


def test_unknown_configuration_exits_2(capsys):
    require_module("torch")
    require_module("sklearn")
    assert cli_main(["bench", "no-such-config"]) == 2
    assert "unknown benchmark configuration" in capsys.readouterr().err
