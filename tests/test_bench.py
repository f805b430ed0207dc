"""The speed benchmark runs end to end (--quick) and reports every field; its PyTorch twin is exact.

No timing is asserted anywhere: the figures depend on the machine and its load.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from digitnet.bench import (
    CONFIGS,
    DigitnetRun,
    _require,
    build_digitnet_model,
    data_rng,
    matmul_plan,
    plan_flops,
    torch_model_from,
)
from digitnet.cli import main as cli_main
from digitnet.cli.cmd_bench import main
from digitnet.data.dataset import Dataset
from digitnet.errors import ConfigError
from digitnet.nn import SGD
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
@pytest.mark.parametrize("name", ["cnn", "cnn-5x5"])
def test_torch_twin_of_the_cnn_computes_the_same_function(name, rng):
    torch = require_module("torch")
    model = build_digitnet_model(CONFIGS[name])
    net = torch_model_from(model, torch)
    x = rng.random((3, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        theirs = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.forward(x, training=False), theirs, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_digitnet_side_starts_from_the_shared_weights_and_order_with_the_benchmark_optimizer(name):
    """What the PyTorch twin copies (build_digitnet_model, data_rng) is what digitnet trains."""
    config = CONFIGS[name]
    data = Dataset(np.zeros((300, 28, 28), np.uint8), np.zeros(300, np.uint8))
    run = DigitnetRun(config, data, data)
    shared = build_digitnet_model(config).state_dict()
    assert all(np.array_equal(value, shared[key]) for key, value in run.model.state_dict().items())
    optimizer = run.trainer.optimizer
    assert isinstance(optimizer, SGD)             # its kernel, FastSGD, by default
    assert (optimizer.lr, optimizer.momentum, optimizer.nesterov, optimizer.weight_decay) \
        == (config.lr, config.momentum, config.nesterov, 0.0)
    assert run.trainer.batch_size == config.batch_size and run.trainer.augment is None
    assert np.array_equal(run.trainer.rng.permutation(300), data_rng().permutation(300))


def test_matmul_plan_of_the_cnn_counts_the_im2col_products(rng):
    plan = matmul_plan(build_digitnet_model(CONFIGS["cnn"]), 4, rng)
    conv1 = 2 * 2 * 32 * 9 * (4 * 28 * 28)                  # forward + weight gradient, no input gradient
    conv2 = 3 * 2 * 64 * 288 * (4 * 14 * 14)
    dense = 3 * 2 * 4 * 3136 * 128 + 3 * 2 * 4 * 128 * 10     # every Dense here has an input gradient
    assert plan_flops(plan) == conv1 + conv2 + dense
    for a, b, out in plan:
        np.matmul(a, b, out=out)                             # every product's shapes fit


def test_missing_framework_is_a_config_error():
    with pytest.raises(ConfigError, match="pip install"):
        _require("no_such_module_for_digitnet", "PyTorch")


def test_unknown_configuration_exits_2(capsys):
    require_module("torch")
    require_module("sklearn")
    assert cli_main(["bench", "no-such-config"]) == 2
    assert "unknown benchmark configuration" in capsys.readouterr().err
