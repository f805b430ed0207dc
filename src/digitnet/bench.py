"""The speed benchmark: digitnet against PyTorch (and scikit-learn) on the identical network.

For one configuration, in one process, the same network is trained by

- digitnet (:func:`~digitnet.training.build_trainer`, exactly as ``digitnet train`` runs it),
- PyTorch on the CPU (``torch.set_num_threads(cores)``), starting from the same initial weights and
  seeing the same batches in the same order with the same optimizer,
- scikit-learn's ``MLPClassifier`` where it applies (MLPs; its own initial weights),

epoch by epoch in turn, the order rotating every epoch (A/B/C, B/C/A, ...) so that a noisy machine
slows each of them alike. Each round also times the matrix products of one epoch alone, with the
shapes and operand layouts the network needs: the arithmetic lower bound, which no implementation
of this network beats on this BLAS. Reported per framework: seconds per epoch (median and 10th
percentile), achieved GFLOP/s, final test accuracy, peak resident memory (each framework measured
alone in a fresh subprocess), and inference times.

    digitnet bench                                   # every configuration, results/ in ./benchmarks
    digitnet bench mlp-seed-002 --epochs 10
    digitnet bench --quick --out /tmp/bench          # a small run that proves the pipeline works

PyTorch and scikit-learn are imported only here (``pip install digitnet[bench] torch``). The
command line (flags, printing) is :mod:`digitnet.cli.cmd_bench`.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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

    @property
    def optimizer_text(self) -> str:
        if self.momentum == 0:
            return f"SGD lr {self.lr:g}"
        kind = "Nesterov momentum" if self.nesterov else "momentum"
        return f"SGD lr {self.lr:g}, {kind} {self.momentum:g}"


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


def train_config(config: BenchConfig):
    """digitnet's side of the benchmark as the :class:`~digitnet.config.TrainConfig` it trains."""
    from digitnet.config import TrainConfig

    optimizer = "sgd" if config.momentum == 0 else "nesterov" if config.nesterov else "momentum"
    return TrainConfig(arch=config.arch, layers=config.layers or None,
                       input_shape=list(config.input_shape) if config.layers else None, activation="relu",
                       optimizer=optimizer, lr=config.lr, momentum=config.momentum, epochs=config.epochs,
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


def torch_model_from(model, torch):
    """The identical network in PyTorch, with a copy of ``model``'s current weights."""
    from digitnet.nn import Dense, Flatten
    from digitnet.nn.activations import ReLU
    from digitnet.nn.conv import Conv2D
    from digitnet.nn.pooling import MaxPool2D

    nn = torch.nn
    modules = []
    for layer in model.layers:
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
        else:
            raise ConfigError(f"the benchmark has no PyTorch twin for {type(layer).__name__}")
    return nn.Sequential(*modules)


# ----------------------------------------------------------------------------------------------
# The contestants: each an object with epoch() -> None and test_accuracy() -> float
# ----------------------------------------------------------------------------------------------
class DigitnetRun:
    """digitnet's Trainer, driven one epoch at a time (as ``digitnet train`` runs it)."""

    name = "digitnet"

    def __init__(self, config: BenchConfig, train, test) -> None:
        from digitnet.training import build_trainer

        self.trainer = build_trainer(train_config(config), train, log=lambda message: None)
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
    each batch is a single index operation: the cheapest data path PyTorch offers.
    """

    name = "torch"

    def __init__(self, config: BenchConfig, train, test) -> None:
        torch = _require("torch", "PyTorch")
        self.torch = torch
        torch.set_num_threads(os.cpu_count() or 1)
        torch.manual_seed(SEED)
        self.net = torch_model_from(build_digitnet_model(config), torch)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=config.lr, momentum=config.momentum,
                                         nesterov=config.nesterov)
        shape = (-1, *config.input_shape)
        self.x = torch.from_numpy(train.images.reshape(shape).astype(np.float32) / np.float32(255))
        self.y = torch.from_numpy(train.labels.astype(np.int64))
        self.x_test = torch.from_numpy(test.images.reshape(shape).astype(np.float32) / np.float32(255))
        self.y_test = torch.from_numpy(test.labels.astype(np.int64))
        self.batch_size = config.batch_size
        self.rng = data_rng()

    def epoch(self) -> None:
        torch, net, optimizer = self.torch, self.net, self.optimizer
        order = torch.from_numpy(self.rng.permutation(len(self.y)))
        net.train()
        loss_sum, correct = 0.0, 0
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            x, y = self.x[idx], self.y[idx]
            optimizer.zero_grad(set_to_none=True)
            outputs = net(x)
            loss = torch.nn.functional.cross_entropy(outputs, y)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(y)                 # the same running metrics digitnet keeps
            correct += int((outputs.argmax(dim=1) == y).sum())

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


def measure_peak_memory(config: BenchConfig, framework: str, quick: bool, data_dir: str | None) -> float | None:
    """Peak RSS (MB) of a fresh process that loads the data and trains one epoch with ``framework`` only."""
    spec = {"what": "peak", "config": config.name, "framework": framework, "quick": quick, "data_dir": data_dir}
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

    ``{"what": "peak", "config", "framework", "quick", "data_dir"}`` trains one epoch of one
    framework; ``{"what": "train", "preset", "epochs", "data_dir", "limit_train"}`` runs what
    ``digitnet train --preset PRESET --epochs N`` runs (:func:`digitnet.runs.run_training`).
    """
    try:
        if spec["what"] == "peak":
            config = CONFIGS[spec["config"]]
            train, test = load_data(config, spec["quick"], spec["data_dir"])
            run = {"digitnet": DigitnetRun, "torch": TorchRun, "sklearn": SklearnRun}[spec["framework"]]
            run(config, train, test).epoch()
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
def run_benchmark(config: BenchConfig, *, epochs: int | None = None, quick: bool = False,
                  data_dir: str | None = None, sklearn: bool = True, memory: bool = True,
                  log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Train every framework ``epochs`` epochs in turn and return the result dict (see the module doc)."""
    epochs = epochs or (2 if quick else config.epochs)
    train, test = load_data(config, quick, data_dir)
    use_sklearn = sklearn and config.arch is not None
    runs: list[Any] = [DigitnetRun(config, train, test), TorchRun(config, train, test)]
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
        "config": config.name, "description": config.description, "optimizer": config.optimizer_text,
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
        stats["peak_rss_mb"] = measure_peak_memory(config, run.name, quick, data_dir) if memory else None
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
        notes.append(f"- {result['config']}: {result['epochs']} epochs each on {result['train_images']:,} "
                     f"images, {result['date']}, load average {load['before'][0]:.1f} before, "
                     f"{load['after'][0]:.1f} after")
    for entry in train_memory:
        if entry.get("peak_rss_mb") is not None:
            notes.append(f"- `digitnet train --preset {entry['preset']} --epochs {entry['epochs']}`"
                         + (f" (first {entry['limit_train']:,} images)" if entry.get("limit_train") else "")
                         + f": peak memory {entry['peak_rss_mb']:.0f} MB")
    return "\n".join(lines + [""] + notes) + "\n"


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
    lines = [f"{result['config']}: {result['description']}, {result['optimizer']}"]
    for name, stats in [*result["frameworks"].items(), ("matmuls alone", result["matmul_bound"])]:
        extra = f", test accuracy {100 * stats['test_accuracy']:.2f}%" if "test_accuracy" in stats else ""
        lines.append(f"  {name:14s} {stats['median']:.3f} s/epoch (p10 {stats['p10']:.3f}), "
                     f"{stats['gflops']:.0f} GFLOP/s{extra}")
    r = result["ratios"]
    lines.append(f"  digitnet / PyTorch {r['digitnet_over_torch_median']:.2f}x, digitnet / lower bound "
                 f"{r['digitnet_over_bound_median']:.2f}x")
    return "\n".join(lines)
