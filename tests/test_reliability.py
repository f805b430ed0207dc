"""Reliability end to end: interrupted runs resume bit for bit, divergence stops cleanly, failed
writes keep the old file, and no bad input ever shows a user a traceback.

The interrupt tests send real signals: to a ``python -m digitnet train`` subprocess from outside
(SIGINT, SIGTERM), and in-process from a callback at an exact batch (deterministic positions).
Runs use small MNIST subsets; the subprocess runs use batch size 1 so an epoch lasts long enough
for a signal sent just after "epoch 1/3" appears to land in the middle of epoch 2.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from digitnet.cli import main
from digitnet.config import TrainConfig
from digitnet.errors import DivergenceError, TrainingInterrupted
from digitnet.io import load_model, read_safetensors, save_model
from digitnet.nn.sequential import Sequential
from digitnet.runs import CHECKPOINT_FILE, HISTORY_FILE, MODEL_FILE, resume_training, run_training
from digitnet.training import Callback, LambdaCallback

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "digitnet"

# The subprocess run: slow enough per epoch (batch size 1) to be hit mid-epoch from outside.
CLI_FLAGS = ["--arch", "784-32-10", "--epochs", "3", "--limit-train", "3000", "--batch-size", "1",
             "--lr", "0.01", "--dropout", "0.1", "--seed", "3", "--no-progress"]
CLI_BATCHES = 3000

_DATASETS: dict = {}


@pytest.fixture(autouse=True)
def _load_mnist_once(monkeypatch):
    """In-process runs share the loaded MNIST arrays (read-only) instead of decoding them each time."""
    import digitnet.data.datasets as datasets

    real = datasets.load_dataset

    def cached(name="mnist", split="train", data_dir=None, **kwargs):
        key = (name, split, data_dir, tuple(sorted(kwargs.items())))
        if key not in _DATASETS:
            _DATASETS[key] = real(name, split, data_dir, **kwargs)
        return _DATASETS[key]

    monkeypatch.setattr(datasets, "load_dataset", cached)


def env_with_data(mnist_path: Path) -> dict[str, str]:
    return {**os.environ, "DIGITNET_DATA": str(mnist_path.parent), "PYTHONUNBUFFERED": "1"}


def digitnet(*args: str, cwd: Path, env: dict | None = None, preexec_fn=None,
             timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digitnet", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=preexec_fn)


def assert_same_tensors(path_a: Path, path_b: Path) -> None:
    a, b = read_safetensors(path_a).tensors, read_safetensors(path_b).tensors
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), f"{name} differs"


def assert_same_history(run_a: Path, run_b: Path) -> None:
    """Every recorded number is identical except the timings."""
    a = json.loads((run_a / HISTORY_FILE).read_text())
    b = json.loads((run_b / HISTORY_FILE).read_text())
    assert a.keys() == b.keys()
    for key in a:
        if key != "seconds":
            assert a[key] == b[key], key
    assert len(a["seconds"]) == len(b["seconds"])


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".part"))]


# ============================================================================ interrupt and resume
@pytest.fixture(scope="module")
def uninterrupted_cli_run(mnist_path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    result = digitnet("train", *CLI_FLAGS, "--out", "B", cwd=folder, env=env_with_data(mnist_path))
    assert result.returncode == 0, result.stderr
    return folder / "B"


def interrupt_cli_run(folder: Path, env: dict, signum: int) -> subprocess.CompletedProcess:
    """Start the CLI run, send ``signum`` as soon as epoch 1 is reported, wait for the exit."""
    proc = subprocess.Popen([sys.executable, "-m", "digitnet", "train", *CLI_FLAGS, "--out", "A"], cwd=folder,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("epoch 1/3"):
                # a moment later, so the signal lands inside epoch 2 rather than on the boundary
                # (an epoch takes ~0.4 s here; boundary interrupts are tested in-process below)
                time.sleep(0.1)
                proc.send_signal(signum)
                break
        stdout, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, "".join(lines) + rest)


@pytest.mark.parametrize(("signum", "reason"), [(signal.SIGINT, "interrupted (Ctrl-C)"),
                                                (signal.SIGTERM, "terminated (SIGTERM)")],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_mid_epoch_then_resume_equals_uninterrupted_run(uninterrupted_cli_run, mnist_path, tmp_path,
                                                               signum, reason):
    env = env_with_data(mnist_path)
    stopped = interrupt_cli_run(tmp_path, env, signum)
    assert stopped.returncode == 130, stopped.stderr
    assert "Traceback" not in stopped.stderr
    message = stopped.stderr.strip().splitlines()[-1]
    # epoch 2 on this machine; epoch 3 only on one fast enough to finish epoch 2 in the 0.1 s wait
    match = re.fullmatch(rf"digitnet train: error: {re.escape(reason)} at epoch ([23]), batch (\d+)/{CLI_BATCHES}; "
                         r"checkpoint saved to A/checkpoint\.safetensors; resume with: digitnet train --resume A",
                         message)
    assert match, message
    epoch, batch = int(match[1]), int(match[2])
    assert 0 < batch < CLI_BATCHES  # really mid-epoch
    run = tmp_path / "A"
    assert not (run / MODEL_FILE).exists()
    meta = read_safetensors(run / CHECKPOINT_FILE).metadata["checkpoint"]
    assert (meta["epoch"], meta["batch_index"]) == (epoch - 1, batch)
    assert len(json.loads((run / HISTORY_FILE).read_text())["epoch"]) == epoch - 1

    resumed = digitnet("train", "--resume", "A", "--no-progress", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming A at epoch {epoch}, batch {batch}" in resumed.stderr
    assert_same_tensors(run / MODEL_FILE, uninterrupted_cli_run / MODEL_FILE)
    assert_same_tensors(run / CHECKPOINT_FILE, uninterrupted_cli_run / CHECKPOINT_FILE)
    assert_same_history(run, uninterrupted_cli_run)
    assert no_temp_files(run)


# In-process runs: the same machinery (run_training with signal handling, as the CLI calls it),
# signalled from a callback at exact positions.
FAST = TrainConfig(arch="784-32-10", epochs=3, limit_train=1000, batch_size=32, dropout=0.1, seed=3, lr=0.05)
FAST_BATCHES = 32  # ceil(1000 / 32)


def quiet_log(message: str) -> None:
    pass


class SignalAt(Callback):
    """Send ``signum`` to this process after batch ``batch`` of epoch ``epoch`` (0-based), ``times`` times."""

    def __init__(self, epoch: int, batch: int, signum: int = signal.SIGINT, times: int = 1) -> None:
        self.epoch, self.batch, self.signum, self.times = epoch, batch, signum, times

    def on_batch_end(self, trainer, batch, loss):
        if trainer.epoch == self.epoch and batch == self.batch:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)


def train_fast(out: Path, *callbacks, config: TrainConfig = FAST, **kwargs):
    return run_training(config, out, quiet=True, handle_signals=True, log=quiet_log, callbacks=list(callbacks),
                        **kwargs)


@pytest.fixture(scope="module")
def uninterrupted_fast_run(mnist_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fast") / "B"
    train_fast(out)
    return out


@pytest.mark.parametrize(("epoch", "batch", "expect"), [
    (0, 0, (0, 1)),                             # after the very first step
    (1, 13, (1, 14)),                           # mid-epoch
    (0, FAST_BATCHES - 1, (1, 0)),              # on an epoch's last batch: checkpoint at the boundary
    (1, FAST_BATCHES - 1, (2, 0)),
], ids=["first-batch", "mid-epoch", "epoch-boundary-1", "epoch-boundary-2"])
def test_interrupt_at_any_position_resumes_bit_for_bit(uninterrupted_fast_run, tmp_path, epoch, batch, expect):
    out = tmp_path / "A"
    with pytest.raises(TrainingInterrupted) as info:
        train_fast(out, SignalAt(epoch, batch))
    assert info.value.exit_code == 130
    assert str(info.value).endswith(f"resume with: digitnet train --resume {out}")
    meta = read_safetensors(out / CHECKPOINT_FILE).metadata["checkpoint"]
    assert (meta["epoch"], meta["batch_index"]) == expect
    assert ("trainer.order" in read_safetensors(out / CHECKPOINT_FILE).tensors) == (expect[1] > 0)
    resume_training(out, quiet=True, handle_signals=True, log=quiet_log)
    assert_same_tensors(out / MODEL_FILE, uninterrupted_fast_run / MODEL_FILE)
    assert_same_history(out, uninterrupted_fast_run)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_interrupted_twice_and_resumed_twice(uninterrupted_fast_run, tmp_path):
    out = tmp_path / "A"
    with pytest.raises(TrainingInterrupted):
        train_fast(out, SignalAt(0, 20))
    with pytest.raises(TrainingInterrupted, match="terminated"):
        resume_training(out, quiet=True, handle_signals=True, log=quiet_log,
                        callbacks=[SignalAt(1, 5, signal.SIGTERM)])
    resume_training(out, quiet=True, handle_signals=True, log=quiet_log)
    assert_same_tensors(out / MODEL_FILE, uninterrupted_fast_run / MODEL_FILE)
    assert_same_history(out, uninterrupted_fast_run)


def test_signal_on_the_very_last_batch_just_finishes(uninterrupted_fast_run, tmp_path):
    out = tmp_path / "A"
    train_fast(out, SignalAt(2, FAST_BATCHES - 1))
    assert_same_tensors(out / MODEL_FILE, uninterrupted_fast_run / MODEL_FILE)


def test_early_stopping_state_survives_a_resume(mnist_path, tmp_path):
    """Patience counter and best weights are part of the checkpoint: resume = uninterrupted run."""
    config = FAST.replace(val_split=0.2, early_stopping=2, epochs=8, lr=0.5)
    train_fast(tmp_path / "B", config=config)
    history = json.loads((tmp_path / "B" / HISTORY_FILE).read_text())
    assert len(history["epoch"]) < 8, "the config should stop early (else this test shows nothing)"
    losses = history["val_loss"]
    best = int(np.argmin(losses))
    assert best < len(losses) - 1, "the best epoch should not be the last (else nothing is restored)"
    with pytest.raises(TrainingInterrupted):
        train_fast(tmp_path / "A", SignalAt(best + 1, 3), config=config)
    resume_training(tmp_path / "A", quiet=True, handle_signals=True, log=quiet_log)
    assert_same_tensors(tmp_path / "A" / MODEL_FILE, tmp_path / "B" / MODEL_FILE)
    assert_same_history(tmp_path / "A", tmp_path / "B")


def test_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(mnist_path, tmp_path, monkeypatch, capsys):
    """Through the CLI entry point: a second Ctrl-C does not wait for the checkpoint (exit 130)."""
    import digitnet.training

    calls = []

    def double_ctrl_c(self, trainer, batch, loss):
        calls.append(batch)
        if trainer.epoch == 1 and batch == 3:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(digitnet.training.ProgressBar, "on_batch_end", double_ctrl_c)
    monkeypatch.setenv("DIGITNET_DATA", str(mnist_path.parent))
    code = main(["train", "--arch", "784-32-10", "--epochs", "3", "--limit-train", "1000", "--batch-size", "32",
                 "--seed", "3", "--out", str(tmp_path / "A"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 130
    assert err.strip().splitlines()[-1] == "digitnet train: interrupted"
    meta = read_safetensors(tmp_path / "A" / CHECKPOINT_FILE).metadata["checkpoint"]
    assert (meta["epoch"], meta["batch_index"]) == (1, 0)  # the one written after epoch 1
    assert np.all(np.isfinite(load_model(tmp_path / "A" / CHECKPOINT_FILE).model.parameters()[0][0]))
    assert no_temp_files(tmp_path / "A")


def test_resume_problems_are_one_line_errors(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"digitnet train: error: {tmp_path / 'nope'} has no {CHECKPOINT_FILE} " \
                                      "to resume from\n"
    assert main(["train", "--resume", str(tmp_path), "--lr", "0.5"]) == 2
    assert "drop lr" in capsys.readouterr().err


def test_resume_from_a_tampered_checkpoint(mnist_path, tmp_path, capsys, monkeypatch):
    out = tmp_path / "A"
    with pytest.raises(TrainingInterrupted):
        train_fast(out, SignalAt(1, 5))
    raw = (out / CHECKPOINT_FILE).read_bytes()
    (out / CHECKPOINT_FILE).write_bytes(raw[:len(raw) // 2])
    monkeypatch.setenv("DIGITNET_DATA", str(mnist_path.parent))
    assert main(["train", "--resume", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"digitnet train: error: {out / CHECKPOINT_FILE}: tensor ")
    assert err[-1].endswith("truncated or tampered file")


def test_resume_with_a_checkpoint_of_another_run(mnist_path, tmp_path):
    """A checkpoint whose data order does not fit this run's data is refused, not an IndexError."""
    with pytest.raises(TrainingInterrupted):
        train_fast(tmp_path / "A", SignalAt(1, 5))
    config = json.loads((tmp_path / "A" / "config.json").read_text())
    config["limit_train"] = 500  # the stored order indexes 1000 images
    (tmp_path / "A" / "config.json").write_text(json.dumps(config))
    from digitnet.errors import ModelFileError

    with pytest.raises(ModelFileError, match="does not match this run"):
        resume_training(tmp_path / "A", quiet=True, log=quiet_log)


# ===================================================================================== divergence
def test_cli_huge_learning_rate_exits_3_with_one_clear_line(mnist_path, tmp_path):
    result = digitnet("train", "--arch", "784-32-10", "--epochs", "2", "--limit-train", "1000", "--lr", "1e6",
                      "--seed", "3", "--out", "D", "--no-progress", cwd=tmp_path, env=env_with_data(mnist_path))
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "diverged" in line]
    assert len(lines) == 1
    assert re.fullmatch(r"digitnet train: error: training diverged: the loss became \S+ at epoch 1, batch \d+ "
                        r"\(learning rate 1e\+06\); try a learning rate 10x smaller \(--lr\), gradient clipping "
                        r"\(--clip-norm 5\), or --on-divergence reduce-lr", lines[0]), lines[0]
    assert not (tmp_path / "D" / MODEL_FILE).exists()


def test_divergence_after_a_good_epoch_keeps_its_checkpoint(mnist_path, tmp_path):
    """Epoch 1 trains normally; then the learning rate is multiplied by 1e7 and epoch 2 blows up."""
    config = FAST.replace(epochs=3)

    def blow_up(trainer, epoch, logs):
        if epoch == 0:
            trainer.lr_scale = 1e7

    out = tmp_path / "D"
    with pytest.raises(DivergenceError) as info:
        train_fast(out, LambdaCallback(on_epoch_end=blow_up), config=config)
    message = str(info.value)
    assert info.value.exit_code == 3
    assert "at epoch 2, batch" in message and "(learning rate 5e+05)" in message
    assert message.endswith(f"; the last good checkpoint is {out / CHECKPOINT_FILE}")
    assert not (out / MODEL_FILE).exists()
    assert len(json.loads((out / HISTORY_FILE).read_text())["epoch"]) == 1

    kept = load_model(out / CHECKPOINT_FILE)
    weights = kept.model.state_dict()
    assert all(np.all(np.isfinite(w)) for w in weights.values())
    one_epoch = train_fast(tmp_path / "one", config=config.replace(epochs=1)).model.state_dict()
    for name, value in one_epoch.items():
        assert np.array_equal(weights[name], value), name  # exactly the weights after epoch 1

    # and the run can be continued from it (the checkpoint holds the original learning rate)
    result = resume_training(out, quiet=True, log=quiet_log)
    assert len(result.history) == 3 and result.metrics["test_accuracy"] > 0.6


def test_reduce_lr_recovers_from_a_too_large_rate(mnist_path, tmp_path):
    logged = []
    config = FAST.replace(lr=1e3, epochs=2, dropout=0.0, on_divergence="reduce-lr")
    result = run_training(config, tmp_path / "R", quiet=True, log=logged.append)
    retries = [line for line in logged if "divided the learning rate by 10" in line]
    assert len(retries) == 3, logged
    assert retries[0].startswith("diverged: the loss became") and retries[-1].endswith("(now x0.001)")
    assert result.history.lr == [pytest.approx(1.0), pytest.approx(1.0)]
    assert result.metrics["test_accuracy"] > 0.2  # it learned something at lr 1


def test_reduce_lr_gives_up_after_three_tries(mnist_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DIGITNET_DATA", str(mnist_path.parent))
    code = main(["train", "--arch", "784-32-10", "--epochs", "2", "--limit-train", "1000", "--lr", "1e6",
                 "--on-divergence", "reduce-lr", "--out", str(tmp_path / "R"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert sum("divided the learning rate by 10" in line for line in err) == 3
    assert err[-1].startswith("digitnet train: error: training diverged:")
    assert err[-1].endswith("(gave up after dividing the learning rate by 10 three times)")


def _tiny_trainer(images, **kwargs):
    from digitnet.nn.losses import make_loss
    from digitnet.nn.optim import make_optimizer
    from digitnet.training import Trainer

    model = Sequential.from_spec("784-8-10", rng=np.random.default_rng(0))
    labels = np.arange(len(images)) % 10
    return Trainer(model, make_loss("cross_entropy"), make_optimizer("sgd", 0.1), (images, labels),
                   batch_size=4, log=quiet_log, **kwargs)


def test_nan_loss_stops_training(rng):
    images = rng.random((16, 784), dtype=np.float32)
    images[9, 5] = np.inf  # batch 3 of the first epoch
    trainer = _tiny_trainer(images, rng=np.random.default_rng(1))
    with pytest.raises(DivergenceError, match=r"the loss became nan at epoch 1, batch \d \(learning rate 0\.1\)"):
        trainer.run()


def test_nan_gradient_stops_training(rng):
    trainer = _tiny_trainer(rng.random((16, 784), dtype=np.float32), clip_norm=5.0)
    backward = trainer.loss_fn.backward

    def poisoned():
        grad = backward()
        grad[0, 0] = np.nan
        return grad

    trainer.loss_fn.backward = poisoned
    with pytest.raises(DivergenceError, match="the gradient norm became nan at epoch 1, batch 1"):
        trainer.run()


# ================================================================================= failed writes
def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
    return apply


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    model = Sequential.from_spec("784-8-10", rng=np.random.default_rng(0))
    return save_model(tmp_path_factory.mktemp("model") / "model.safetensors", model)


@pytest.fixture(scope="module")
def kaggle_test_csv(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (200, 784))
    path = tmp_path_factory.mktemp("csv") / "test.csv"
    lines = [",".join(f"pixel{i}" for i in range(784))] + [",".join(map(str, row)) for row in pixels]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_disk_full_keeps_the_old_submission(tmp_path, tiny_model, kaggle_test_csv):
    out = tmp_path / "submission.csv"
    out.write_text("ImageId,Label\n1,7\n")
    result = digitnet("submit", str(tiny_model), str(kaggle_test_csv), "-o", str(out), cwd=tmp_path,
                      preexec_fn=_limit_file_size(1000))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"digitnet submit: error: cannot write {out}: file too large (file "
                                          "system or process file-size limit) (the previous file, if any, "
                                          "is unchanged)"]
    assert out.read_text() == "ImageId,Label\n1,7\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submission.csv"]
    ok = digitnet("submit", str(tiny_model), str(kaggle_test_csv), "-o", str(out), cwd=tmp_path)
    assert ok.returncode == 0 and len(out.read_text().splitlines()) == 201


def test_cli_disk_full_while_training(mnist_path, tmp_path):
    result = digitnet("train", "--arch", "784-32-10", "--epochs", "1", "--limit-train", "500", "--out", "T",
                      "--no-progress", cwd=tmp_path, env=env_with_data(mnist_path),
                      preexec_fn=_limit_file_size(50_000))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == ("digitnet train: error: cannot write T/initial.safetensors: file too "
                                              "large (file system or process file-size limit) (the previous "
                                              "file, if any, is unchanged)")
    assert sorted(p.name for p in (tmp_path / "T").iterdir()) == ["config.json"]


def test_cli_output_under_a_regular_file(mnist_path, tmp_path, tiny_model, kaggle_test_csv, capsys, monkeypatch):
    (tmp_path / "file").write_text("not a directory")
    assert main(["submit", str(tiny_model), str(kaggle_test_csv), "-o", str(tmp_path / "file" / "s.csv")]) == 2
    assert capsys.readouterr().err == (f"digitnet submit: error: cannot write {tmp_path / 'file' / 's.csv'}: "
                                       f"{tmp_path / 'file'} is not a directory\n")
    monkeypatch.setenv("DIGITNET_DATA", str(mnist_path.parent))
    assert main(["train", "--arch", "784-8-10", "--out", str(tmp_path / "file" / "run")]) == 2
    assert capsys.readouterr().err.startswith(f"digitnet train: error: cannot create run directory "
                                              f"{tmp_path / 'file' / 'run'}: ")
    assert (tmp_path / "file").read_text() == "not a directory"


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_cli_read_only_directory(tmp_path, tiny_model, kaggle_test_csv, capsys, monkeypatch, code):
    """What chmod 0o555 does to a normal user (root ignores it, so the refusal is simulated)."""
    out = tmp_path / "submission.csv"
    out.write_text("old\n")

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert main(["submit", str(tiny_model), str(kaggle_test_csv), "-o", str(out)]) == 2
    assert capsys.readouterr().err == (f"digitnet submit: error: cannot write {out}: permission denied or "
                                       "read-only location\n")
    assert out.read_text() == "old\n"


def test_checkpoint_write_failing_mid_training_keeps_the_previous_one(mnist_path, tmp_path, monkeypatch):
    from digitnet.atomic import WriteError

    real_replace = os.replace
    checkpoint_writes = []

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == CHECKPOINT_FILE:
            checkpoint_writes.append(dst)
            if len(checkpoint_writes) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "A"
    with pytest.raises(WriteError, match="checkpoint.safetensors: no space left on device"):
        train_fast(out)
    meta = read_safetensors(out / CHECKPOINT_FILE).metadata["checkpoint"]
    assert (meta["epoch"], meta["batch_index"]) == (1, 0)
    assert no_temp_files(out)
    monkeypatch.undo()
    resume_training(out, quiet=True, log=quiet_log)  # and the run can go on from it
    assert len(json.loads((out / HISTORY_FILE).read_text())["epoch"]) == 3


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_download_onto_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch, where):
    """A download whose last bytes (flushed at fsync) or rename fail: DataError, old file intact."""
    import gzip
    import hashlib

    from digitnet.atomic import WriteError
    from digitnet.data.download import download_file
    from digitnet.data.idx import idx_bytes
    from digitnet.errors import DataError
    from tests.data.localserver import serve

    contents = idx_bytes(np.arange(1000, dtype=np.uint8))
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "f.gz").write_bytes(gzip.compress(contents))
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "f.gz").write_bytes(b"old")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, where, full)
    with serve(tmp_path / "served") as base, pytest.raises(DataError) as info:
        download_file("f.gz", hashlib.sha256(contents).hexdigest(), tmp_path / "dest", [base], progress=False)
    assert not isinstance(info.value, WriteError)
    assert str(info.value) == f"cannot write {tmp_path / 'dest' / 'f.gz'}: No space left on device"
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "dest").iterdir()] == ["f.gz"]
    assert (tmp_path / "dest" / "f.gz").read_bytes() == b"old"


# ================================================================================= code hygiene
def python_files() -> list[Path]:
    return sorted([*SRC.rglob("*.py"), *(ROOT / "tests").rglob("*.py")])


def test_no_bare_except_anywhere():
    offenders = []
    for path in python_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        offenders += [f"{path}:{node.lineno}" for node in ast.walk(tree)
                      if isinstance(node, ast.ExceptHandler) and node.type is None]
    assert not offenders, f"bare except: {offenders}"


# calls that write a file directly, bypassing digitnet.atomic's temp-file-and-rename
_WRITE_MODES = re.compile(r"^[wax]")
_BUFFER_NAMES = {"buffer", "handle", "fileobj", "stream", "out", "fh", "f"}


def _is_buffer(node: ast.expr | None) -> bool:
    """An in-memory buffer or an already open (atomic) handle: writing into it is fine."""
    return (isinstance(node, ast.Name) and node.id in _BUFFER_NAMES) or (
        isinstance(node, ast.Call) and ast.unparse(node.func) in ("io.BytesIO", "BytesIO", "io.StringIO"))


def _direct_writes(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func, first = node.func, (node.args[0] if node.args else None)
        where = f"{path.name}:{node.lineno} {ast.unparse(func)}(...)"
        if isinstance(func, ast.Name) or (isinstance(func, ast.Attribute) and func.attr == "open"
                                          and ast.unparse(func.value) in ("io", "builtins", "gzip", "Path")):
            name = func.id if isinstance(func, ast.Name) else func.attr
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords
                                                                  if k.arg == "mode"), None)
            if name == "open" and isinstance(mode, ast.Constant) and isinstance(mode.value, str) \
                    and _WRITE_MODES.match(mode.value):
                found.append(where)
            continue
        if not isinstance(func, ast.Attribute):
            continue
        owner, attr = ast.unparse(func.value), func.attr
        if (attr in ("write_text", "write_bytes") and owner not in ("atomic", "digitnet.atomic")
                or attr in ("save", "savez", "savez_compressed", "savetxt") and owner in ("np", "numpy")
                or attr == "dump" and owner in ("json", "pickle")
                or attr == "tofile"
                or attr == "savefig" and not _is_buffer(first)
                or attr == "save" and re.search(r"image|img|^im$|picture|canvas", owner, re.I)
                and not _is_buffer(first)):
            found.append(where)
    return found


def test_every_file_write_goes_through_atomic():
    allowed = {SRC / "atomic.py", SRC / "data" / "download.py"}  # download: its own temp file + rename
    offenders = [w for path in SRC.rglob("*.py") if path not in allowed for w in _direct_writes(path)]
    assert not offenders, f"writes that bypass digitnet.atomic: {offenders}"


def test_the_write_scanner_finds_direct_writes(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from pathlib import Path\nopen('x', 'w')\nPath('y').write_text('z')\n"
                      "fig.savefig('out.png')\nnp.save('a.npy', a)\nwith open('r', 'rb') as f: pass\n"
                      "fig.savefig(buffer, format='png')\nimage.save(path)\njson.dump(obj, fp)\n"
                      "atomic.write_text(p, 'x')\nwrite_text(p, 'x')\nhistory.save(p)\n"
                      "image.save(io.BytesIO())\nopen(path, mode='ab')\n")
    assert [w.split(" ", 1)[1] for w in _direct_writes(sample)] == [
        "open(...)", "Path('y').write_text(...)", "fig.savefig(...)", "np.save(...)", "image.save(...)",
        "json.dump(...)", "open(...)"]


# ============================================================== every bad input, through the CLI
def _bad_files(folder: Path, model: Path) -> dict[str, Path]:
    """Broken inputs of every kind, next to a valid model."""
    import gzip
    import io
    import zipfile

    from digitnet.data.idx import idx_bytes

    files: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        files[name] = folder / name
        files[name].write_bytes(data)

    raw = model.read_bytes()
    put("truncated.safetensors", raw[:len(raw) // 2])
    put("random.safetensors", np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_len])
    meta = json.loads(header["__metadata__"]["digitnet"])
    meta["architecture"]["layers"][0]["out_features"] = 10**9
    header["__metadata__"]["digitnet"] = json.dumps(meta)
    new_header = json.dumps(header).encode()
    put("huge-arch.safetensors", len(new_header).to_bytes(8, "little") + new_header + raw[8 + header_len:])
    nan_model = Sequential.from_spec("784-8-10", rng=np.random.default_rng(0))
    nan_model.layers[0].params["weights"][0, 0] = np.nan
    files["nan.safetensors"] = save_model(folder / "nan.safetensors", nan_model)
    (folder / "run-without-model").mkdir()
    files["run-without-model"] = folder / "run-without-model"

    images = np.zeros((3, 28, 28), np.uint8)
    put("truncated-images-idx3-ubyte", idx_bytes(images)[:-100])
    put("bad-magic-idx3-ubyte", b"\x01\x02\x08\x03" + idx_bytes(images)[4:])
    put("corrupt.gz", gzip.compress(idx_bytes(images))[:40] + b"garbage" * 10)
    put("empty.csv", b"")
    header_row = "label," + ",".join(f"pixel{i}" for i in range(784))
    put("bad-pixel.csv", (header_row + "\n" + "3," + ",".join(["0"] * 100 + ["300"] + ["0"] * 683) + "\n").encode())
    put("wrong-columns.csv", (header_row + "\n1,2,3\n").encode())
    put("test.csv", (",".join(f"pixel{i}" for i in range(784)) + "\n" + ",".join(["7"] * 784) + "\n").encode())
    put("text-value.csv", (header_row + "\n" + "3," + ",".join(["0"] * 783 + ["abc"]) + "\n").encode())
    with open(folder / "pickled.npz", "wb") as handle:  # a test fixture, not a digitnet output
        np.savez(handle, x_train=np.array([{"evil": 1}], dtype=object), y_train=np.zeros(1))
    files["pickled.npz"] = folder / "pickled.npz"
    put("truncated.npz", files["pickled.npz"].read_bytes()[:50])
    with open(folder / "small-images.npz", "wb") as handle:
        np.savez(handle, x_train=np.zeros((2, 5, 5), np.uint8), y_train=np.zeros(2, np.uint8))
    files["small-images.npz"] = folder / "small-images.npz"
    huge = io.BytesIO()
    with zipfile.ZipFile(huge, "w") as archive:  # a .npy header claiming 784 GB over 16 bytes of data
        header = b"{'descr': '|u1', 'fortran_order': False, 'shape': (1000000000, 784), }"
        header += b" " * (-(len(header) + 11) % 64) + b"\n"
        archive.writestr("x_train.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
                         + bytes(16))
    put("huge-claim.npz", huge.getvalue())
    put("notes.png", b"this is not a picture\n")
    put("truncated.png", _png_bytes()[:60])
    put("blank.png", _png_bytes(blank=True))
    put("plain-file", b"I am a file, not a folder")
    return files


def _png_bytes(blank: bool = False) -> bytes:
    import io

    from PIL import Image

    pixels = np.full((40, 40), 255, np.uint8)
    if not blank:
        pixels[8:32, 18:22] = 0
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# (id, command line with <placeholders>, exit code, regular expression the single error line must match)
BAD_INPUTS = [
    ("model-missing", "evaluate <folder>/nope.safetensors", 2, r"model file not found: "),
    ("model-dir-without-model", "evaluate <run-without-model>", 2, r"is a directory without model.safetensors"),
    ("model-truncated", "evaluate <truncated.safetensors>", 2, r"claims bytes .* truncated or tampered file"),
    ("model-random-bytes", "evaluate <random.safetensors>", 2, r"is not a valid model file"),
    ("model-huge-architecture", "evaluate <huge-arch.safetensors>", 2, r"layer 0 of the architecture"),
    ("model-nan-weights", "predict <nan.safetensors> <bad-pixel.csv>", 2, r"holds NaN or infinite values"),
    ("idx-truncated", "evaluate <model> --file <truncated-images-idx3-ubyte>", 2, r"IDX data truncated"),
    ("idx-bad-magic", "predict <model> <bad-magic-idx3-ubyte>", 2, r"unrecognised format"),
    ("gzip-corrupt", "predict <model> <corrupt.gz>", 2, r"corrupt gzip data|truncated gzip"),
    ("csv-empty", "predict <model> <empty.csv>", 2, r"file is empty"),
    ("csv-pixel-out-of-range", "evaluate <model> --file <bad-pixel.csv>", 2,
     r"line 2, column 102: pixel 300 is outside 0-255"),
    ("csv-wrong-columns", "submit <model> <wrong-columns.csv> -o <folder>/s.csv", 2,
     r"line 2: 3 columns, expected 785|expected 785 columns, found 3"),
    ("csv-text-value", "predict <model> <text-value.csv>", 2, r"non-numeric pixel value 'abc'"),
    ("npz-pickled-objects", "predict <model> <pickled.npz>", 2, r"cannot read as .npz: .*allow_pickle"),
    ("npz-truncated", "predict <model> <truncated.npz>", 2, r"zip"),
    ("npz-huge-shape-claim", "predict <model> <huge-claim.npz>", 2, r"the header claims shape \(1000000000, 784\)"),
    ("npz-images-not-28x28", "evaluate <model> --file <small-images.npz>", 2,
     r"images of 5x5 pixels do not fit a model whose input is 784"),
    ("image-not-an-image", "predict <model> <notes.png>", 2, r"is not a PNG, JPEG, BMP, GIF or WebP image"),
    ("image-truncated", "predict <model> <truncated.png>", 2, r"corrupt or truncated image"),
    ("image-blank", "predict <model> <blank.png>", 2, r"no ink found"),
    ("image-missing", "predict <model> <folder>/missing.png", 2, r"image file not found"),
    ("train-bad-architecture", "train --arch 784-abc-10 --out <folder>/r1", 2, r"784-abc-10"),
    ("train-out-under-a-file", "train --arch 784-8-10 --out <plain-file>/run", 2, r"cannot create run directory"),
    ("train-resume-missing", "train --resume <folder>/no-run", 2, r"has no checkpoint.safetensors"),
    ("train-bad-flag-value", "train --lr -1", 2, None),  # argparse: usage line + error line
    ("submit-output-under-a-file", "submit <model> <test.csv> -o <plain-file>/s.csv", 2, r"is not a directory"),
]


@pytest.fixture(scope="module")
def bad_input_results(mnist_path, tmp_path_factory, tiny_model):
    """Run every BAD_INPUTS command line as its own process (four at a time)."""
    folder = tmp_path_factory.mktemp("bad")
    names = {"folder": str(folder), "model": str(tiny_model),
             **{k: str(v) for k, v in _bad_files(folder, tiny_model).items()}}
    env = env_with_data(mnist_path)

    def run(case):
        args = [re.sub(r"<([^>]+)>", lambda m: names[m[1]], part) for part in case[1].split()]
        return case[0], digitnet(*args, cwd=folder, env=env)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(run, BAD_INPUTS))


@pytest.mark.parametrize(("case", "command", "exit_code", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gives_one_line_and_exit_code(bad_input_results, case, command, exit_code, message):
    result = bad_input_results[case]
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == exit_code, result.stderr
    lines = result.stderr.strip().splitlines()
    name = command.split()[0]
    if message is None:
        assert lines[-1].startswith(f"digitnet {name}: error: ") or "error:" in lines[-1]
        return
    errors = [line for line in lines if line.startswith(f"digitnet {name}: error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], result.stderr
    assert re.search(message, errors[0]), errors[0]
