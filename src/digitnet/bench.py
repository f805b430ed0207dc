"""The speed benchmark: digitnet against PyTorch (and scikit-learn) on the identical network.

For one configuration, in one process, the same network is trained by

- digitnet (:func:`~digitnet.training.build_trainer`, exactly as ``digitnet train`` runs it),
- PyTorch on the CPU, starting from the same initial weights and seeing the same batches (augmented
  alike where the configuration augments) in the same order with the same optimizer and learning-rate
  schedule,
- scikit-learn's ``MLPClassifier`` where it applies (MLPs; its own initial weights),

epoch by epoch in turn, the order rotating every epoch (A/B/C, B/C/A, ...) so that a noisy machine
slows each of them alike. Each round also times the matrix products of one epoch alone, with the
shapes and operand layouts the network needs: the arithmetic lower bound, which no implementation
of this network beats on this BLAS. Reported per framework: seconds per epoch (median and 10th
percentile), achieved GFLOP/s, final test accuracy, peak resident memory (each framework measured
alone in a fresh subprocess), and inference times.

    digitnet bench                                   # every configuration, results/ in ./benchmarks
    digitnet bench mlp-seed-002 --epochs 10
    digitnet bench cnn-fast --threads 2              # digitnet and PyTorch on 2 threads each
    digitnet bench --quick --out /tmp/bench          # a small run that proves the pipeline works

Configurations name a network and its training (SGD ones written here, and ``cnn-fast``/``cnn-best``:
the presets as ``digitnet train --preset`` trains them). ``--threads N`` (default: $DIGITNET_THREADS,
else the number of cores) sets ``DIGITNET_THREADS=N`` for digitnet and ``torch.set_num_threads(N)``;
both counts are recorded.

PyTorch and scikit-learn are imported only here (``pip install digitnet[bench] torch``). The
command line (flags, printing) is :mod:`digitnet.cli.cmd_bench`.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitnet.errors import ConfigError, DigitnetError

#: where ``digitnet bench`` writes when run from a source checkout (``benchmarks/results``)
DEFAULT_RESULTS = Path("benchmarks") / "results"
FRAMEWORKS = ("digitnet", "torch", "sklearn")
SEED = 0
#: pause before each timed epoch (see run_benchmark)
SETTLE_SECONDS = 0.5


@dataclass(frozen=True)
class BenchConfig:
    """A network and how it is trained. ``layers`` (digitnet layer configs) or an MLP ``arch``."""

    name: str
    description: str
    lr: float
    momentum: float = 0.0
    nesterov: bool = False
    batch_size: int = 128
    epochs: int = 10
    arch: str | None = None
    layers: list[dict[str, Any]] = field(default_factory=list)
    input_shape: tuple[int, ...] = (784,)
    quick_train: int = 2048                       # training images in --quick mode
    #: a preset of presets.toml: digitnet trains it as configured (optimizer, schedule, augmentation),
    #: with the benchmark's epochs and seed; the fields above then only repeat what it says
    preset: str | None = None

    @property
    def optimizer_text(self) -> str:
        return optimizer_text(train_config(self))


def optimizer_text(config) -> str:
    """How a :class:`~digitnet.config.TrainConfig` optimizes: "SGD lr 0.02, momentum 0.9",
    "Adam lr 0.002, cosine schedule with 0.5-epoch warm-up", ..."""
    from digitnet.config import build_optimizer
    from digitnet.nn.optim import SGD

    optimizer = build_optimizer(config)
    text = f"{'SGD' if isinstance(optimizer, SGD) else type(optimizer).__name__} lr {optimizer.lr:g}"
    if isinstance(optimizer, SGD) and optimizer.momentum:
        text += f", {'Nesterov momentum' if optimizer.nesterov else 'momentum'} {optimizer.momentum:g}"
    if config.schedule != "constant":
        text += f", {config.schedule} schedule"
    if config.warmup_epochs:
        text += f" with {config.warmup_epochs:g}-epoch warm-up"
    return text


def epochs_text(epochs: int) -> str:
    return f"{epochs} epoch" + ("" if epochs == 1 else "s")


def from_preset(preset: str, description: str, *, epochs: int, quick_train: int = 256) -> BenchConfig:
    """A configuration that trains ``preset`` (its network, batch size and learning rate copied into the
    :class:`BenchConfig` fields, which the table and the lower bound read)."""
    from digitnet.config import load_preset

    config = load_preset(preset)
    layers = config.layers is not None
    return BenchConfig(preset, description, lr=config.lr, batch_size=config.batch_size, epochs=epochs,
                       arch=None if layers else config.arch, layers=list(config.layers or []),
                       input_shape=tuple(config.input_shape) if layers else (784,), quick_train=quick_train,
                       preset=preset)


#: ReLU after max pooling: the same function and gradients as before it (max commutes with the
#: monotone ReLU), on 4x fewer values; PyTorch's twin runs the same order.
CNN_LAYERS: list[dict[str, Any]] = [
    {"type": "Conv2D", "in_channels": 1, "out_channels": 32, "kernel_size": 3, "padding": 1},
    {"type": "MaxPool2D", "kernel_size": 2},
    {"type": "ReLU"},
    {"type": "Conv2D", "in_channels": 32, "out_channels": 64, "kernel_size": 3, "padding": 1},
    {"type": "MaxPool2D", "kernel_size": 2},
    {"type": "ReLU"},
    {"type": "Flatten"},
    {"type": "Dense", "in_features": 64 * 7 * 7, "out_features": 128},
    {"type": "ReLU"},
    {"type": "Dense", "in_features": 128, "out_features": 10},
]

#: The same with 5x5 kernels: the network of the cnn-fast preset.
CNN5_LAYERS: list[dict[str, Any]] = [
    {**layer, "kernel_size": 5, "padding": 2} if layer["type"] == "Conv2D" else layer for layer in CNN_LAYERS
]

CONFIGS: dict[str, BenchConfig] = {
    "mlp-seed-002": BenchConfig("mlp-seed-002", "784-128-64-10 ReLU MLP (the seed-002 network)", lr=0.1,
                                arch="784-128-64-10", epochs=10),
    "mlp-800": BenchConfig("mlp-800", "784-800-10 ReLU MLP", lr=0.05, momentum=0.9, nesterov=True,
                           arch="784-800-10", epochs=8),
    "cnn": BenchConfig("cnn", "CNN conv3x3(32)-maxpool-conv3x3(64)-maxpool-fc128-fc10, ReLU", lr=0.02,
                       momentum=0.9, layers=CNN_LAYERS, input_shape=(1, 28, 28), epochs=4, quick_train=256),
    "cnn-5x5": BenchConfig("cnn-5x5", "CNN conv5x5(32)-maxpool-conv5x5(64)-maxpool-fc128-fc10, ReLU (cnn-fast)",
                           lr=0.02, momentum=0.9, layers=CNN5_LAYERS, input_shape=(1, 28, 28), epochs=4,
                           quick_train=256),
    # the presets users train, as configured: Adam with a cosine schedule (and for cnn-best, batch norm,
    # dropout and augmentation); their schedules span the benchmark's epochs
    "cnn-fast": from_preset("cnn-fast", "CNN conv5x5(32)-maxpool-conv5x5(64)-maxpool-fc128-fc10, ReLU "
                            "(the cnn-fast preset)", epochs=3),
    "cnn-best": from_preset("cnn-best", "CNN conv5x5(32)-BN-maxpool-conv5x5(64)-BN-maxpool-fc128-dropout 0.25-"
                            "fc10, ReLU, augmented (shifts, rotations, scaling) (the cnn-best preset)", epochs=1),
}


def _require(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"the benchmark needs {what} ({module} is not installed): "
                          f"pip install 'digitnet[bench]' torch") from None


def configs_named(names: list[str]) -> list[BenchConfig]:
    """The configurations called ``names`` (every one for an empty list); ConfigError for an unknown name."""
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise ConfigError(f"unknown benchmark configuration(s) {', '.join(unknown)}; "
                          f"choose from {', '.join(CONFIGS)}")
    return [CONFIGS[n] for n in names or CONFIGS]


def require_frameworks(sklearn: bool = True) -> None:
    """ConfigError (with the pip command) when PyTorch, or scikit-learn if wanted, is missing."""
    _require("torch", "PyTorch")
    if sklearn:
        _require("sklearn", "scikit-learn")


# ----------------------------------------------------------------------------------------------
# Statistics and machine facts
# ----------------------------------------------------------------------------------------------
def summarize(seconds: list[float]) -> dict[str, Any]:
    """Median and 10th percentile (the quiet figure on a noisy machine) of per-epoch times."""
    values = np.asarray(seconds, dtype=np.float64)
    return {"seconds": [round(float(s), 5) for s in values], "median": float(np.median(values)),
            "p10": float(np.percentile(values, 10)), "min": float(values.min())}


def blas_info() -> list[dict[str, Any]]:
    """The BLAS libraries loaded in this process and the kernel each runs (via threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("internal_api", "architecture", "num_threads", "version", "prefix")
    return [{k: info.get(k) for k in keys} for info in threadpool_info()]


def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
        "blas": blas_info(),
        "openblas_env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                    "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
                         if k in os.environ},
    }


def openblas_warning() -> str | None:
    """A note when OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE pin OpenBLAS to an older, slower kernel.

    Some machines set them because old OpenBLAS builds misbehave on their processor; a current
    NumPy then runs a slower kernel than it would pick itself. The benchmark leaves the environment
    alone (it is the user's) but says so, and records the kernel that ran in the JSON.
    """
    pinned = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ]
    if not pinned:
        return None
    kernels = ", ".join(str(b.get("architecture")) for b in blas_info()) or "unknown"
    return (f"note: {' and '.join(pinned)} set in the environment (BLAS kernel: {kernels}); for this "
            f"machine's own best kernel run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE digitnet bench ...")


def load_warning() -> str | None:
    """A note when other programs keep the machine busy (the figures will be noisy)."""
    load = os.getloadavg()[0]
    if load <= 1.0:
        return None
    return (f"note: the load average is {load:.1f}: other programs are running and the figures will be "
            "noisy (the JSON records the load before and after)")


# ----------------------------------------------------------------------------------------------
# Data and models
# ----------------------------------------------------------------------------------------------
def load_data(config: BenchConfig, quick: bool, data_dir: str | None = None):
    """(train, test) Datasets; ``quick`` keeps a small subset of each."""
    from digitnet.data.datasets import load_dataset

    train = load_dataset("mnist", split="train", data_dir=data_dir)
    test = load_dataset("mnist", split="test", data_dir=data_dir)
    if quick:
        train, test = train.head(config.quick_train), test.head(1000)
    return train, test


def train_config(config: BenchConfig, epochs: int | None = None):
    """digitnet's side of the benchmark as the :class:`~digitnet.config.TrainConfig` it trains for
    ``epochs`` epochs (default: the configuration's), which a learning-rate schedule spans."""
    from digitnet.config import TrainConfig, load_preset

    epochs = epochs or config.epochs
    if config.preset is not None:
        return load_preset(config.preset).replace(epochs=epochs, seed=SEED)
    optimizer = "sgd" if config.momentum == 0 else "nesterov" if config.nesterov else "momentum"
    return TrainConfig(arch=config.arch, layers=config.layers or None,
                       input_shape=list(config.input_shape) if config.layers else None, activation="relu",
                       optimizer=optimizer, lr=config.lr, momentum=config.momentum, epochs=epochs,
                       batch_size=config.batch_size, seed=SEED, description=config.description)


def build_digitnet_model(config: BenchConfig):
    """The network with the initial weights every framework starts from."""
    from digitnet.config import build_model, seed_generators

    rngs = seed_generators(SEED)
    return build_model(train_config(config), rngs["init"], rngs["dropout"])


def data_rng() -> np.random.Generator:
    """The generator of the epochs' shuffled orders: each framework gets its own identical copy."""
    from digitnet.config import seed_generators

    return seed_generators(SEED)["data"]


def _scaled(images: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """uint8 images -> float32 in ``shape``, scaled exactly as digitnet scales a batch (``x * SCALE``)."""
    from digitnet.data.batches import SCALE

    images = images.reshape(shape)
    return np.multiply(images, SCALE, out=np.empty(images.shape, np.float32), casting="unsafe")


def torch_model_from(model, torch):
    """The identical network in PyTorch, with a copy of ``model``'s current weights (and batch norm's
    running statistics). Dropout draws its masks from PyTorch's generator, not digitnet's."""
    from digitnet.nn import Dense, Flatten
    from digitnet.nn.activations import ReLU
    from digitnet.nn.batchnorm import BatchNorm
    from digitnet.nn.conv import Conv2D
    from digitnet.nn.dropout import Dropout
    from digitnet.nn.pooling import MaxPool2D

    nn = torch.nn
    modules = []
    shape = tuple(model.input_shape)
    for layer in model.layers:
        layer_input, shape = shape, layer.output_shape(shape)
        if isinstance(layer, Dense):
            linear = nn.Linear(layer.in_features, layer.out_features)
            with torch.no_grad():   # torch keeps the weight as [out, in]
                linear.weight.copy_(torch.from_numpy(layer.params["weights"].T.copy()))
                linear.bias.copy_(torch.from_numpy(layer.params["bias"]))
            modules.append(linear)
        elif isinstance(layer, Conv2D):
            conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                             padding=layer.padding)
            with torch.no_grad():   # same [C_out, C_in, kH, kW] layout
                conv.weight.copy_(torch.from_numpy(layer.params["weights"]))
                conv.bias.copy_(torch.from_numpy(layer.params["bias"]))
            modules.append(conv)
        elif isinstance(layer, ReLU):
            modules.append(nn.ReLU())
        elif isinstance(layer, MaxPool2D):
            modules.append(nn.MaxPool2d(layer.kernel_size, layer.stride))
        elif isinstance(layer, Flatten):
            modules.append(nn.Flatten())
        elif isinstance(layer, BatchNorm):
            # the same convention: momentum is the weight of the batch's statistics, the running
            # variance the unbiased one; per channel of [B, C, H, W] or per feature of [B, F]
            kind = nn.BatchNorm2d if len(layer_input) == 3 else nn.BatchNorm1d
            norm = kind(layer.num_features, eps=layer.eps, momentum=layer.momentum)
            with torch.no_grad():
                norm.weight.copy_(torch.from_numpy(layer.params["gamma"]))
                norm.bias.copy_(torch.from_numpy(layer.params["beta"]))
                norm.running_mean.copy_(torch.from_numpy(layer.buffers["running_mean"]))
                norm.running_var.copy_(torch.from_numpy(layer.buffers["running_var"]))
            modules.append(norm)
        elif isinstance(layer, Dropout):
            modules.append(nn.Dropout(layer.rate))
        else:
            raise ConfigError(f"the benchmark has no PyTorch twin for {type(layer).__name__}")
    return nn.Sequential(*modules)


def torch_optimizer_from(optimizer, parameters, torch):
    """PyTorch's optimizer doing what digitnet's ``optimizer`` does (SGD with momentum, Adam), with
    the same settings; its learning rate is set before every step where a schedule changes it."""
    from digitnet.nn.adam import Adam
    from digitnet.nn.optim import SGD

    if getattr(optimizer, "weight_decay", 0):
        # digitnet decays weight matrices only; torch's weight_decay would decay biases too
        raise ConfigError("the benchmark's PyTorch twin does not do weight decay")
    if isinstance(optimizer, Adam):            # AdamW without weight decay is Adam
        return torch.optim.Adam(parameters, lr=optimizer.lr, betas=(optimizer.beta1, optimizer.beta2),
                                eps=optimizer.eps)
    if isinstance(optimizer, SGD):
        return torch.optim.SGD(parameters, lr=optimizer.lr, momentum=optimizer.momentum,
                               nesterov=optimizer.nesterov)
    raise ConfigError(f"the benchmark has no PyTorch twin for the optimizer {type(optimizer).__name__}")


# ----------------------------------------------------------------------------------------------
# The contestants: each an object with epoch() -> None and test_accuracy() -> float
# ----------------------------------------------------------------------------------------------
class DigitnetRun:
    """digitnet's Trainer, driven one epoch at a time (as ``digitnet train`` runs it)."""

    name = "digitnet"

    def __init__(self, config: BenchConfig, train, test, epochs: int | None = None) -> None:
        from digitnet.training import build_trainer

        self.trainer = build_trainer(train_config(config, epochs), train, log=lambda message: None)
        self.test = test

    @property
    def model(self):
        return self.trainer.model

    def epoch(self) -> None:
        self.trainer.epochs = self.trainer.epoch + 1
        self.trainer.run()

    def test_accuracy(self) -> float:
        from digitnet.training import evaluate

        return evaluate(self.trainer.model, self.trainer.loss_fn, self.test)[1]


class TorchRun:
    """The same network, weights, batches and optimizer in PyTorch (a plain training loop).

    The images are held as one pre-scaled float32 tensor (the usual ``TensorDataset`` way), so
    each batch is a single index operation: the cheapest data path PyTorch offers. With
    augmentation, each batch's uint8 images go through digitnet's own augmentation function, drawing
    from this run's copy of the data generator exactly as digitnet's Trainer draws from its own (the
    epoch's order, then each batch's distortions), so both see the same augmented images; they are
    then scaled to float32 as digitnet scales them. A learning-rate schedule (digitnet's own object)
    sets the rate before every step at digitnet's progress ``epoch + batch / batches_per_epoch``.
    """

    name = "torch"

    def __init__(self, config: BenchConfig, train, test, epochs: int | None = None,
                 threads: int | None = None) -> None:
        from digitnet.config import build_augment, build_optimizer, build_schedule
        from digitnet.kernels.parallel import available_cores

        torch = _require("torch", "PyTorch")
        self.torch = torch
        torch.set_num_threads(threads or available_cores())
        torch.manual_seed(SEED)
        settings = train_config(config, epochs)
        if (settings.loss, settings.loss_reduction, settings.clip_norm) != ("cross_entropy", "mean", 0):
            raise ConfigError("the benchmark's PyTorch twin trains with mean cross-entropy and no clipping")
        self.label_smoothing = settings.label_smoothing
        self.net = torch_model_from(build_digitnet_model(config), torch)
        self.optimizer = torch_optimizer_from(build_optimizer(settings), self.net.parameters(), torch)
        schedule = build_schedule(settings)
        self.schedule = schedule if schedule.name != "constant" or schedule.warmup_epochs else None
        self.augment = build_augment(settings)
        self.shape = (-1, *config.input_shape)
        self.images = train.images
        self.x = None if self.augment is not None else torch.from_numpy(_scaled(train.images, self.shape))
        self.y = torch.from_numpy(train.labels.astype(np.int64))
        self.x_test = torch.from_numpy(_scaled(test.images, self.shape))
        self.y_test = torch.from_numpy(test.labels.astype(np.int64))
        n = len(train.labels)
        self.batch_size = min(settings.batch_size or n, n)            # as the Trainer cuts batches
        self.batches_per_epoch = -(-n // self.batch_size)
        self.epochs_done = 0
        self.rng = data_rng()

    def epoch(self) -> None:
        torch, net, optimizer = self.torch, self.net, self.optimizer
        order = self.rng.permutation(len(self.y))
        order_t = torch.from_numpy(order)
        net.train()
        loss_sum, correct = 0.0, 0
        for b in range(self.batches_per_epoch):
            rows = slice(b * self.batch_size, (b + 1) * self.batch_size)
            idx = order_t[rows]
            if self.augment is None:
                x = self.x[idx]
            else:
                raw = self.augment(np.take(self.images, order[rows], axis=0), self.rng)
                x = torch.from_numpy(_scaled(raw, self.shape))
            y = self.y[idx]
            optimizer.zero_grad(set_to_none=True)
            outputs = net(x)
            loss = torch.nn.functional.cross_entropy(outputs, y, label_smoothing=self.label_smoothing)
            loss.backward()
            if self.schedule is not None:
                lr = self.schedule(self.epochs_done + b / self.batches_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
            optimizer.step()
            loss_sum += loss.item() * len(y)                 # the same running metrics digitnet keeps
            correct += int((outputs.argmax(dim=1) == y).sum())
        self.epochs_done += 1

    def test_accuracy(self) -> float:
        with self.torch.no_grad():
            self.net.eval()
            predicted = self.torch.cat([self.net(self.x_test[s:s + 2000]).argmax(dim=1)
                                        for s in range(0, len(self.x_test), 2000)])
        return float((predicted == self.y_test).float().mean())


class SklearnRun:
    """scikit-learn's MLPClassifier (MLPs only): one ``partial_fit`` over the epoch's order.

    ``shuffle=False`` with the rows given in the shared shuffled order makes its batches the same
    as the others'; its initial weights are its own (Glorot uniform).
    """

    name = "sklearn"

    def __init__(self, config: BenchConfig, train, test) -> None:
        neural_network = _require("sklearn.neural_network", "scikit-learn")
        sizes = [int(s) for s in config.arch.split("-")]
        self.clf = neural_network.MLPClassifier(
            hidden_layer_sizes=tuple(sizes[1:-1]), activation="relu", solver="sgd", alpha=0.0,
            batch_size=config.batch_size, learning_rate_init=config.lr, momentum=config.momentum,
            nesterovs_momentum=config.nesterov, shuffle=False, random_state=SEED)
        self.x = train.images.reshape(len(train), -1).astype(np.float32) / np.float32(255)
        self.y = train.labels
        self.x_test = test.images.reshape(len(test), -1).astype(np.float32) / np.float32(255)
        self.y_test = test.labels
        self.classes = np.arange(10)
        self.rng = data_rng()

    def epoch(self) -> None:
        import warnings

        order = self.rng.permutation(len(self.y))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.clf.partial_fit(self.x[order], self.y[order], classes=self.classes)

    def test_accuracy(self) -> float:
        return float(self.clf.score(self.x_test, self.y_test))


# ----------------------------------------------------------------------------------------------
# The arithmetic lower bound: the matrix products of one epoch, nothing else
# ----------------------------------------------------------------------------------------------
def matmul_plan(model, batch: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``[(a, b, out), ...]``: every product one training step of ``model`` needs, for ``batch`` images.

    Layers without a product (activations, pooling, Flatten, BatchNorm, Dropout) add nothing.
    Dense ``n_in -> n_out``: ``x @ W`` (forward), ``x.T @ g`` (weight gradient) and, except for the
    first layer, ``g @ W.T`` (input gradient). Conv2D as one im2col GEMM each way, ``P = B*H_out*W_out``,
    ``K = C_in*kH*kW``: ``W_mat @ cols.T`` (forward), ``g_mat @ cols`` (weight gradient) and, except
    for the first layer, ``g_mat.T @ W_mat`` (the input gradient, before col2im).
    Operands are random float32 in the layouts these products have in a training step.
    """
    from digitnet.nn import Dense
    from digitnet.nn.conv import Conv2D

    def rand(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    plan = []
    shape = model.input_shape
    first = True
    for layer in model.layers:
        out_shape = layer.output_shape(shape)
        if isinstance(layer, Dense):
            n_in, n_out = layer.in_features, layer.out_features
            x, w, g = rand(batch, n_in), rand(n_in, n_out), rand(batch, n_out)
            plan += [(x, w, np.empty((batch, n_out), np.float32)), (x.T, g, np.empty((n_in, n_out), np.float32))]
            if not first:
                plan.append((g, w.T, np.empty((batch, n_in), np.float32)))
            first = False
        elif isinstance(layer, Conv2D):
            c_out, positions = layer.out_channels, batch * out_shape[1] * out_shape[2]
            k = layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
            cols, w_mat, g_mat = rand(positions, k), rand(c_out, k), rand(c_out, positions)
            plan += [(w_mat, cols.T, np.empty((c_out, positions), np.float32)),
                     (g_mat, cols, np.empty((c_out, k), np.float32))]
            if not first:
                plan.append((g_mat.T, w_mat, np.empty((positions, k), np.float32)))
            first = False
        # anything else (ReLU, MaxPool2D, Flatten, BatchNorm, Dropout) is element-wise work: skipped
        shape = out_shape
    return plan


def plan_flops(plan) -> int:
    return sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b, _ in plan)


class MatmulBound:
    """Times the products of one epoch (full batches and the last partial one) and nothing else."""

    name = "matmul_bound"

    def __init__(self, config: BenchConfig, num_train: int) -> None:
        rng = np.random.default_rng(1)
        model = build_digitnet_model(config)
        self.full_steps, rest = divmod(num_train, config.batch_size)
        self.full = matmul_plan(model, config.batch_size, rng)
        self.rest = matmul_plan(model, rest, rng) if rest else []
        self.flops = self.full_steps * plan_flops(self.full) + plan_flops(self.rest)

    def epoch(self) -> None:
        matmul = np.matmul
        for _ in range(self.full_steps):
            for a, b, out in self.full:
                matmul(a, b, out=out)
        for a, b, out in self.rest:
            matmul(a, b, out=out)


# ----------------------------------------------------------------------------------------------
# Inference and memory
# ----------------------------------------------------------------------------------------------
def _median_time(fn: Callable[[], Any], repeats: int, budget: float = 5.0) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls (fewer if they would take over ``budget`` s)."""
    start = time.perf_counter()
    fn()
    repeats = max(1, min(repeats, int(budget / max(time.perf_counter() - start, 1e-9))))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def inference_times(run: DigitnetRun, torch_run: TorchRun | None, test, quick: bool) -> dict[str, Any]:
    """Median seconds to predict one image, and the whole test set, from uint8 images."""
    from digitnet.data.batches import images_to_inputs

    model = run.model
    one = test.images[:1]
    repeats = 20 if quick else 300
    result = {
        "test_images": len(test),
        "digitnet_one_image_ms": 1e3 * _median_time(
            lambda: model.predict(images_to_inputs(one, model.input_shape)), repeats),
        "digitnet_test_set_s": _median_time(
            lambda: model.predict(images_to_inputs(test.images, model.input_shape)), 3 if quick else 10),
    }
    if torch_run is not None:
        torch, net = torch_run.torch, torch_run.net
        net.eval()
        shape = (-1, *model.input_shape)

        def torch_predict(images):
            with torch.no_grad():
                x = torch.from_numpy(images.reshape(shape).astype(np.float32) / np.float32(255))
                return torch.cat([net(x[s:s + 2048]).argmax(dim=1) for s in range(0, len(x), 2048)])

        result["torch_one_image_ms"] = 1e3 * _median_time(lambda: torch_predict(one), repeats)
        result["torch_test_set_s"] = _median_time(lambda: torch_predict(test.images), 3 if quick else 10)
    return result


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB.

    Linux's VmHWM, not ``ru_maxrss``: a child keeps the parent's ``ru_maxrss`` across fork and
    exec, so a subprocess started by a benchmark that had PyTorch loaded would report its parent's
    peak. ``ru_maxrss`` (KiB on Linux) is the fallback elsewhere.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child_command(spec: dict[str, Any]) -> list[str]:
    return [sys.executable, "-c", "import json, sys; from digitnet.bench import child_main; "
            "sys.exit(child_main(json.loads(sys.argv[1])))", json.dumps(spec)]


def _run_child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    try:
        done = subprocess.run(_child_command(spec), capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_peak_memory(config: BenchConfig, framework: str, quick: bool, data_dir: str | None,
                        epochs: int | None = None, threads: int | None = None) -> float | None:
    """Peak RSS (MB) of a fresh process that loads the data and trains one epoch with ``framework`` only
    (set up for ``epochs`` epochs, PyTorch on ``threads`` threads; $DIGITNET_THREADS is inherited)."""
    spec = {"what": "peak", "config": config.name, "framework": framework, "quick": quick, "data_dir": data_dir,
            "epochs": epochs, "threads": threads}
    return _run_child(spec, timeout=1800).get("peak_rss_mb")


def measure_train_memory(preset: str, epochs: int, data_dir: str | None, limit_train: int | None = None
                         ) -> dict[str, Any]:
    """Peak RSS of ``digitnet train --preset PRESET --epochs N`` in a fresh process.

    The peak is reached in the first epoch (every buffer exists after the first batch, and the
    evaluation after the last epoch uses fixed-size chunks), so two epochs measure a whole run.
    """
    spec = {"what": "train", "preset": preset, "epochs": epochs, "data_dir": data_dir, "limit_train": limit_train}
    result = _run_child(spec, timeout=3600)
    return {"preset": preset, "epochs": epochs, "limit_train": limit_train, **result}


def child_main(spec: dict[str, Any]) -> int:
    """Entry point of the measuring subprocesses; prints one JSON line (the error on stderr).

    ``{"what": "peak", "config", "framework", "quick", "data_dir", "epochs", "threads"}`` trains one
    epoch of one framework; ``{"what": "train", "preset", "epochs", "data_dir", "limit_train"}`` runs what
    ``digitnet train --preset PRESET --epochs N`` runs (:func:`digitnet.runs.run_training`).
    """
    try:
        if spec["what"] == "peak":
            config = CONFIGS[spec["config"]]
            train, test = load_data(config, spec["quick"], spec["data_dir"])
            framework, epochs = spec["framework"], spec.get("epochs")
            if framework == "digitnet":
                run = DigitnetRun(config, train, test, epochs)
            elif framework == "torch":
                run = TorchRun(config, train, test, epochs, spec.get("threads"))
            else:
                run = SklearnRun(config, train, test)
            run.epoch()
            print(json.dumps({"peak_rss_mb": peak_rss_mb()}))
            return 0
        from digitnet.config import load_preset
        from digitnet.runs import run_training

        config = load_preset(spec["preset"]).replace(epochs=spec["epochs"], data_dir=spec["data_dir"],
                                                     limit_train=spec["limit_train"])
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            run_training(config, Path(tmp) / "run", progress=False)
            seconds = time.perf_counter() - started
    except DigitnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "seconds": seconds}))
    return 0


# ----------------------------------------------------------------------------------------------
# The benchmark
# ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def digitnet_threads(threads: int) -> Iterator[None]:
    """While active, ``$DIGITNET_THREADS`` is ``threads`` (for this process and the subprocesses it
    starts); the previous value (or its absence) is restored afterwards."""
    from digitnet.kernels.parallel import ENV_VAR

    previous = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = str(threads)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = previous


def run_benchmark(config: BenchConfig, *, epochs: int | None = None, quick: bool = False,
                  data_dir: str | None = None, sklearn: bool = True, memory: bool = True,
                  threads: int | None = None, log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Train every framework ``epochs`` epochs in turn and return the result dict (see the module doc).

    ``threads``: digitnet's thread setting ($DIGITNET_THREADS, while the benchmark runs) and
    ``torch.set_num_threads``; default $DIGITNET_THREADS if set, else the number of cores.
    """
    from digitnet.kernels.parallel import resolve_threads

    threads = resolve_threads(threads)
    torch = _require("torch", "PyTorch")
    torch_threads_before = torch.get_num_threads()
    try:
        with digitnet_threads(threads):
            return _run_benchmark(config, epochs=epochs, quick=quick, data_dir=data_dir, sklearn=sklearn,
                                  memory=memory, threads=threads, log=log)
    finally:
        torch.set_num_threads(torch_threads_before)


def _run_benchmark(config: BenchConfig, *, epochs: int | None, quick: bool, data_dir: str | None, sklearn: bool,
                   memory: bool, threads: int, log: Callable[[str], None]) -> dict[str, Any]:
    from digitnet.kernels.parallel import resolve_threads

    epochs = epochs or (min(2, config.epochs) if quick else config.epochs)
    train, test = load_data(config, quick, data_dir)
    use_sklearn = sklearn and config.arch is not None
    runs: list[Any] = [DigitnetRun(config, train, test, epochs), TorchRun(config, train, test, epochs, threads)]
    if use_sklearn:
        runs.append(SklearnRun(config, train, test))
    bound = MatmulBound(config, len(train))
    contestants = [*runs, bound]
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {c.name: [] for c in contestants}
    for epoch in range(epochs):
        shift = epoch % len(contestants)
        for contestant in contestants[shift:] + contestants[:shift]:   # rotate who goes first
            # let the previous contestant's idle BLAS/OpenMP threads stop spinning: on 2 vCPUs that
            # share a core they would slow whoever runs next
            time.sleep(SETTLE_SECONDS)
            start = time.perf_counter()
            contestant.epoch()
            times[contestant.name].append(time.perf_counter() - start)
        log(f"{config.name} epoch {epoch + 1}/{epochs}: " +
            ", ".join(f"{name} {values[-1]:.3f}s" for name, values in times.items()))
    load_after = os.getloadavg()
    flops = bound.flops
    result: dict[str, Any] = {
        "config": config.name, "description": config.description, "preset": config.preset,
        "optimizer": optimizer_text(train_config(config, epochs)),
        "batch_size": config.batch_size, "epochs": epochs, "quick": quick, "train_images": len(train),
        "test_images": len(test), "flops_per_epoch": flops,
        "load_average": {"before": list(load_before), "after": list(load_after)},
        "machine": machine_info(), "versions": {}, "frameworks": {},
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    for run in runs:
        stats = summarize(times[run.name])
        stats["gflops"] = flops / stats["median"] / 1e9
        stats["test_accuracy"] = run.test_accuracy()
        stats["peak_rss_mb"] = measure_peak_memory(config, run.name, quick, data_dir, epochs, threads) \
            if memory else None
        result["frameworks"][run.name] = stats
    bound_stats = summarize(times[bound.name])
    bound_stats["gflops"] = flops / bound_stats["median"] / 1e9
    result["matmul_bound"] = bound_stats
    ours, theirs = result["frameworks"]["digitnet"], result["frameworks"]["torch"]
    result["ratios"] = {
        "digitnet_over_torch_median": ours["median"] / theirs["median"],
        "digitnet_over_torch_p10": ours["p10"] / theirs["p10"],
        "digitnet_over_bound_median": ours["median"] / bound_stats["median"],
        "digitnet_over_bound_p10": ours["p10"] / bound_stats["p10"],
        "accuracy_difference_points": 100 * (ours["test_accuracy"] - theirs["test_accuracy"]),
    }
    result["inference"] = inference_times(runs[0], runs[1], test, quick)
    torch = runs[1].torch
    # digitnet's thread setting as its kernels read it, and the threads PyTorch ran on
    result["threads"] = {"digitnet": resolve_threads(None), "torch": torch.get_num_threads()}
    result["versions"] = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                          "torch_blas": "mkl" if torch.backends.mkl.is_available() else "other"}
    if use_sklearn:
        import sklearn as sk

        result["versions"]["sklearn"] = sk.__version__
    return result


# ----------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------
def _fmt_rss(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} MB"


def markdown_table(results: list[dict[str, Any]], train_memory: list[dict[str, Any]] = ()) -> str:
    """The README's table: one row per (configuration, framework), plus the matmul lower bound."""
    lines = ["| configuration | implementation | s/epoch median | s/epoch p10 | vs PyTorch (median, p10) "
             "| vs lower bound (median, p10) | GFLOP/s | test accuracy | peak memory |",
             "|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        bound = result["matmul_bound"]
        torch_stats = result["frameworks"]["torch"]
        title = f"{result['description']}, {result['optimizer']}, batch {result['batch_size']}"
        for name, stats in [*result["frameworks"].items(), ("matmuls alone (lower bound)", bound)]:
            accuracy = f"{100 * stats['test_accuracy']:.2f}%" if "test_accuracy" in stats else ""
            lines.append(
                f"| {title} | {name} | {stats['median']:.3f} | {stats['p10']:.3f} | "
                f"{stats['median'] / torch_stats['median']:.2f}x, {stats['p10'] / torch_stats['p10']:.2f}x | "
                f"{stats['median'] / bound['median']:.2f}x, {stats['p10'] / bound['p10']:.2f}x | "
                f"{stats['gflops']:.0f} | {accuracy} | {_fmt_rss(stats.get('peak_rss_mb'))} |")
            title = ""
    notes = []
    for result in results:
        inf = result.get("inference", {})
        if "digitnet_one_image_ms" in inf:
            text = (f"{result['config']}: predict one image {inf['digitnet_one_image_ms']:.2f} ms, "
                    f"{inf['test_images']:,} test images {inf['digitnet_test_set_s']:.3f} s")
            if "torch_one_image_ms" in inf:
                text += (f" (PyTorch {inf['torch_one_image_ms']:.2f} ms, {inf['torch_test_set_s']:.3f} s)")
            notes.append(f"- {text}")
        load = result["load_average"]
        text = (f"- {result['config']}: {epochs_text(result['epochs'])} each on {result['train_images']:,} "
                f"images, {result['date']}, load average {load['before'][0]:.1f} before, "
                f"{load['after'][0]:.1f} after")
        if "threads" in result:
            text += f"; threads: digitnet {result['threads']['digitnet']}, PyTorch {result['threads']['torch']}"
        notes.append(text)
        if result.get("preset"):
            notes.append(f"- {result['config']}: the `{result['preset']}` preset as configured, its schedule "
                         f"spanning {epochs_text(result['epochs'])}; PyTorch sets the same rate before "
                         "every step" + _twin_note(result["preset"]))
    for entry in train_memory:
        if entry.get("peak_rss_mb") is not None:
            notes.append(f"- `digitnet train --preset {entry['preset']} --epochs {entry['epochs']}`"
                         + (f" (first {entry['limit_train']:,} images)" if entry.get("limit_train") else "")
                         + f": peak memory {entry['peak_rss_mb']:.0f} MB")
    return "\n".join(lines + [""] + notes) + "\n"


def _twin_note(preset: str) -> str:
    """What else the PyTorch twin of ``preset`` shares with digitnet, and what it does not."""
    from digitnet.config import load_preset

    try:
        config = load_preset(preset)
    except ConfigError:
        return ""
    note = ""
    if config.augment:
        note += "; both augment each batch with digitnet's augmentation from copies of one seeded generator"
    if any(layer.get("type") == "Dropout" for layer in config.layers or []) or config.dropout:
        note += "; dropout masks are each framework's own"
    return note


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_results(result: dict[str, Any] | None, out_dir: Path, name: str | None = None) -> Path:
    """Write ``<name>.json`` (default: the config's name) and regenerate ``bench.md`` from every
    benchmark JSON in ``out_dir``."""
    from digitnet.atomic import write_json, write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name or result['config']}.json"
    if result is not None:
        write_json(path, result)
    results = [r for r in (_read_json(out_dir / f"{c}.json") for c in CONFIGS) if r]
    memory = [r for r in (_read_json(p) for p in sorted(out_dir.glob("train-memory-*.json"))) if r]
    write_text(out_dir / "bench.md", markdown_table(results, memory))
    return path


def format_result(result: dict[str, Any]) -> str:
    """A few human lines for the terminal."""
    lines = [f"{result['config']}: {result['description']}, {result['optimizer']}, batch {result['batch_size']}"]
    threads = result.get("threads")
    lines.append(f"  {epochs_text(result['epochs'])} on {result['train_images']:,} images"
                 + (f", threads: digitnet {threads['digitnet']}, PyTorch {threads['torch']}" if threads else ""))
    for name, stats in [*result["frameworks"].items(), ("matmuls alone", result["matmul_bound"])]:
        extra = f", test accuracy {100 * stats['test_accuracy']:.2f}%" if "test_accuracy" in stats else ""
        lines.append(f"  {name:14s} {stats['median']:.3f} s/epoch (p10 {stats['p10']:.3f}), "
                     f"{stats['gflops']:.0f} GFLOP/s{extra}")
    r = result["ratios"]
    lines.append(f"  digitnet / PyTorch {r['digitnet_over_torch_median']:.2f}x, digitnet / lower bound "
                 f"{r['digitnet_over_bound_median']:.2f}x")
    return "\n".join(lines)
