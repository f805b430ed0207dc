"""Model files (digitnet.io): exact round trips, and every kind of damaged or tampered file refused.

A tampered file must fail with ModelFileError (one line on stderr and exit 2 from the CLI), never
with another exception and never after a large allocation: the header is checked before the data
is read, and the architecture before the model is built.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from digitnet.errors import ModelFileError
from digitnet.io import (
    MAX_HEADER_BYTES,
    load_model,
    read_safetensors,
    resolve_model_path,
    save_model,
    write_safetensors,
)
from digitnet.nn.sequential import Sequential

SRC = Path(__file__).resolve().parents[1] / "src"


def small_model(spec: str = "784-16-10", seed: int = 0, **kwargs) -> Sequential:
    return Sequential.from_spec(spec, rng=np.random.default_rng(seed), **kwargs)


def split_file(path: Path) -> tuple[dict, bytes]:
    """(header dict, data bytes) of a safetensors file."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def join_file(path: Path, header: dict | bytes, data: bytes) -> Path:
    """Write a safetensors file from a header (dict or raw bytes) and data, without any checks."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def edit_metadata(header: dict, change) -> dict:
    meta = json.loads(header["__metadata__"]["digitnet"])
    change(meta)
    header["__metadata__"]["digitnet"] = json.dumps(meta)
    return header


@pytest.fixture
def model_file(tmp_path) -> Path:
    return save_model(tmp_path / "model.safetensors", small_model(), metrics={"test_accuracy": 0.5})


def peak_bytes(fn) -> int:
    """Peak traced memory (Python and NumPy allocations) while ``fn()`` runs."""
    tracemalloc.start()
    try:
        fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


# ------------------------------------------------------------------------------------ round trips
def test_round_trip_is_exact(tmp_path, rng):
    model = small_model("784-32-16-10", dropout=0.2, seed=3)
    # train-like perturbation so the weights are not just the initialiser's
    for _, param, _ in model.named_parameters():
        param += rng.normal(0, 0.01, param.shape).astype(np.float32)
    extra = {"optimizer.velocity.0": rng.normal(size=(784, 32)).astype(np.float32),
             "trainer.order": rng.permutation(100).astype(np.int64)}
    path = save_model(tmp_path / "m.safetensors", model, classes=list("abcdefghij"), metrics={"acc": 0.25},
                      dataset="fashion-mnist", training={"lr": 0.1}, extra_tensors=extra,
                      extra_meta={"note": "hi"})
    loaded = load_model(path)
    assert loaded.model.config() == model.config()
    original, restored = model.state_dict(), loaded.model.state_dict()
    assert original.keys() == restored.keys()
    for name in original:
        assert restored[name].dtype == np.float32
        assert np.array_equal(original[name], restored[name]), name
    assert loaded.classes == list("abcdefghij")
    assert loaded.metrics == {"acc": 0.25}
    assert loaded.dataset == "fashion-mnist"
    assert loaded.training == {"lr": 0.1}
    assert loaded.metadata["note"] == "hi"
    assert set(loaded.extra_tensors) == set(extra)
    for name, array in extra.items():
        assert loaded.extra_tensors[name].dtype == array.dtype
        assert np.array_equal(loaded.extra_tensors[name], array)
    x = rng.random((5, 784), dtype=np.float32)
    assert np.array_equal(model.forward(x), loaded.model.forward(x))


def test_round_trip_sigmoid_output_model(tmp_path, rng):
    model = small_model("784-8-10", activation="sigmoid", output_activation="sigmoid", init="xavier")
    loaded = load_model(save_model(tmp_path / "m.safetensors", model))
    x = rng.random((3, 784), dtype=np.float32)
    assert np.array_equal(model.forward(x), loaded.model.forward(x))
    assert loaded.model.output_kind == model.output_kind


def test_round_trip_cnn(tmp_path, rng):
    pytest.importorskip("digitnet.nn.conv")
    pytest.importorskip("digitnet.nn.pooling")
    config = {"input_shape": [1, 28, 28], "layers": [
        {"type": "Conv2D", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1},
        {"type": "ReLU"}, {"type": "MaxPool2D", "kernel_size": 2},
        {"type": "Flatten"}, {"type": "Dense", "in_features": 4 * 14 * 14, "out_features": 10}]}
    model = Sequential.from_config(config, rng=rng)
    loaded = load_model(save_model(tmp_path / "cnn.safetensors", model))
    assert loaded.model.config() == model.config()
    for name, array in model.state_dict().items():
        assert np.array_equal(array, loaded.model.state_dict()[name]), name
    x = rng.random((2, 1, 28, 28), dtype=np.float32)
    # the reference layers give exactly the same numbers; the kernels (the default) the same up to rounding
    reference = load_model(tmp_path / "cnn.safetensors", kernels="reference").model
    assert np.array_equal(model.forward(x), reference.forward(x))
    np.testing.assert_allclose(loaded.model.forward(x), model.forward(x), rtol=1e-5, atol=1e-6)


def test_big_endian_and_other_dtypes_round_trip(tmp_path):
    tensors = {"a": np.arange(6, dtype=">f4").reshape(2, 3), "b": np.array([1, -2], dtype=np.int8),
               "c": np.array([True, False]), "d": np.arange(3, dtype=np.float64), "e": np.zeros((0, 4))}
    write_safetensors(tmp_path / "t.safetensors", tensors, {"x": 1})
    saved = read_safetensors(tmp_path / "t.safetensors")
    assert saved.metadata == {"x": 1}
    for name, array in tensors.items():
        assert saved.tensors[name].shape == array.shape
        assert np.array_equal(saved.tensors[name], array)
        assert saved.tensors[name].dtype == array.dtype.newbyteorder("=")


def test_files_are_standard_safetensors(tmp_path, model_file):
    """Our files open with the safetensors library, and its files open with ours."""
    st = pytest.importorskip("safetensors.numpy")
    theirs = st.load_file(str(model_file))
    ours = read_safetensors(model_file).tensors
    assert theirs.keys() == ours.keys()
    for name in ours:
        assert np.array_equal(theirs[name], ours[name])
    header, _ = split_file(model_file)
    st.save_file(ours, str(tmp_path / "theirs.safetensors"), metadata=header["__metadata__"])
    loaded = load_model(tmp_path / "theirs.safetensors")
    for name, array in ours.items():
        assert np.array_equal(loaded.model.state_dict()[name], array)


def test_run_directory_resolves_to_its_model(tmp_path, model_file):
    assert resolve_model_path(tmp_path) == model_file
    assert load_model(tmp_path).path == model_file
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(ModelFileError, match="without model.safetensors"):
        load_model(empty)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path, model_file):
    before = model_file.read_bytes()
    save_model(model_file, small_model(seed=1))
    assert model_file.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


# ---------------------------------------------------------------------------- damaged or tampered
def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    with pytest.raises(ModelFileError, match="is a directory"):
        read_safetensors(tmp_path)


@pytest.mark.parametrize("size", [0, 1, 7])
def test_shorter_than_the_length_prefix(tmp_path, size):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"\x05" * size)
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(path)


def test_truncated_anywhere(tmp_path, model_file):
    raw = model_file.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    cuts = [8, 9, 8 + header_len // 2, 8 + header_len, 8 + header_len + 1, len(raw) - 4, len(raw) - 1]
    for cut in cuts:
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(raw[:cut])
        with pytest.raises(ModelFileError):
            load_model(path)


def test_random_bytes_wrong_magic(tmp_path, rng):
    path = tmp_path / "random.safetensors"
    for size in (8, 100, 5000):
        path.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        with pytest.raises(ModelFileError, match="not a valid model file|truncated"):
            load_model(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)  # another format entirely
    with pytest.raises(ModelFileError, match="header claims"):
        load_model(path)


@pytest.mark.parametrize("header", [b"not json at all", b"[1, 2, 3]", b"{" * 50, b"[" * 100_000,
                                    b'{"a": ' + b"9" * 5000 + b"}", b"\xff\xfe{}"],
                         ids=["text", "list", "unclosed", "deeply-nested", "huge-int", "not-utf8"])
def test_header_that_is_not_a_json_object(tmp_path, header):
    with pytest.raises(ModelFileError, match="header is not"):
        load_model(join_file(tmp_path / "m.safetensors", header, b""))


def test_bad_digitnet_metadata(tmp_path, model_file):
    header, data = split_file(model_file)
    cases = {"not-json": "{oops", "not-object": "[1]", "deep": "[" * 100_000, "number": 3}
    for name, value in cases.items():
        header["__metadata__"]["digitnet"] = value
        path = join_file(tmp_path / f"{name}.safetensors", header, data)
        with pytest.raises(ModelFileError, match="metadata"):
            load_model(path)


def test_safetensors_file_without_digitnet_metadata(tmp_path):
    write_safetensors(tmp_path / "plain.safetensors", {"w": np.zeros(3, np.float32)}, {})
    header, data = split_file(tmp_path / "plain.safetensors")
    del header["__metadata__"]
    path = join_file(tmp_path / "bare.safetensors", header, data)
    for p in (tmp_path / "plain.safetensors", path):
        with pytest.raises(ModelFileError, match="not a digitnet model"):
            load_model(p)


def test_unsupported_format_version(tmp_path, model_file):
    header, data = split_file(model_file)
    edit_metadata(header, lambda m: m.update(format_version=99))
    with pytest.raises(ModelFileError, match="format version 99"):
        load_model(join_file(model_file, header, data))


def test_missing_tensor(tmp_path, model_file):
    header, data = split_file(model_file)
    del header["layers.2.bias"]
    with pytest.raises(ModelFileError, match=r"missing \['layers.2.bias'\]"):
        load_model(join_file(model_file, header, data))


def test_extra_tensor(tmp_path, model_file):
    header, data = split_file(model_file)
    header["layers.7.weights"] = {"dtype": "F32", "shape": [1], "data_offsets": [len(data), len(data) + 4]}
    with pytest.raises(ModelFileError, match=r"unexpected \['layers.7.weights'\]"):
        load_model(join_file(model_file, header, data + b"\0" * 4))


def test_wrong_shape(tmp_path, model_file):
    header, data = split_file(model_file)
    header["layers.0.weights"]["shape"] = [16, 784]  # same byte count, transposed
    with pytest.raises(ModelFileError, match=r"layers.0.weights: expected shape \[784, 16\]"):
        load_model(join_file(model_file, header, data))


def test_wrong_dtype(tmp_path, model_file):
    header, data = split_file(model_file)
    header["layers.2.bias"]["dtype"] = "I32"  # same size as F32
    with pytest.raises(ModelFileError, match="layers.2.bias is int32, expected float32"):
        load_model(join_file(model_file, header, data))
    header["layers.2.bias"]["dtype"] = "F8_E4M3"
    with pytest.raises(ModelFileError, match="unsupported dtype"):
        load_model(join_file(model_file, header, data))
    header["layers.2.bias"]["dtype"] = ["F32"]
    with pytest.raises(ModelFileError, match="unsupported dtype"):
        load_model(join_file(model_file, header, data))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weights(tmp_path, value):
    model = small_model()
    model.layers[0].params["weights"][3, 4] = value
    path = save_model(tmp_path / "m.safetensors", model)
    with pytest.raises(ModelFileError, match="layers.0.weights holds NaN or infinite values"):
        load_model(path)


def test_header_claiming_gigabytes_is_refused_without_allocating(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", 10 * 1024**3) + b"{}" + b"\0" * 100)
    with pytest.raises(ModelFileError, match="header claims 10,737,418,240 bytes"):
        load_model(path)
    path.write_bytes(struct.pack("<Q", MAX_HEADER_BYTES + 1) + b" " * (MAX_HEADER_BYTES + 1))
    with pytest.raises(ModelFileError, match="header claims"):
        load_model(path)

    path.write_bytes(struct.pack("<Q", 10 * 1024**3) + b"{}" + b"\0" * 100)
    assert peak_bytes(lambda: pytest.raises(ModelFileError, load_model, path)) < 1_000_000


def test_tensor_claiming_gigabytes_is_refused_without_allocating(tmp_path, model_file):
    header, data = split_file(model_file)
    header["layers.0.weights"]["shape"] = [50_000, 50_000]  # 10 GB of float32
    header["layers.0.weights"]["data_offsets"] = [0, 50_000 * 50_000 * 4]
    path = join_file(tmp_path / "big.safetensors", header, data)
    with pytest.raises(ModelFileError, match="truncated or tampered"):
        load_model(path)
    assert peak_bytes(lambda: pytest.raises(ModelFileError, load_model, path)) < 2_000_000


def test_shape_whose_product_overflows_int64(tmp_path):
    # 2**30 * 2**30 * 16 = 2**64 wraps to 0 in int64 arithmetic; it must not pass as an empty tensor
    header = {"x": {"dtype": "U8", "shape": [2**30, 2**30, 16], "data_offsets": [0, 0]}}
    with pytest.raises(ModelFileError, match="claims bytes 0..0"):
        read_safetensors(join_file(tmp_path / "m.safetensors", header, b""))


def test_architecture_claiming_gigabytes_is_refused_before_building(tmp_path, model_file):
    header, data = split_file(model_file)
    edit_metadata(header, lambda m: m["architecture"]["layers"][0].update(out_features=10**8))
    path = join_file(tmp_path / "huge-arch.safetensors", header, data)
    with pytest.raises(ModelFileError, match=r"layer 0 of the architecture \('Dense'\) needs more than"):
        load_model(path)
    assert peak_bytes(lambda: pytest.raises(ModelFileError, load_model, path)) < 2_000_000

    edit_metadata(header, lambda m: m["architecture"].update(layers=[{"type": "ReLU"}] * 5000))
    with pytest.raises(ModelFileError, match="5,000 layers"):
        load_model(join_file(path, header, data))


@pytest.mark.parametrize("layer", [{"type": "Dense", "in_features": "many", "out_features": 16},
                                   {"type": "Dense", "in_features": [784], "out_features": 16},
                                   {"type": "Dense", "in_features": -784, "out_features": 16},
                                   {"type": "Dense", "in_features": 1e999, "out_features": 16},
                                   {"type": "Dense", "in_features": 784},
                                   {"type": "Pickle", "code": "os.system('rm -rf /')"},
                                   {"in_features": 784}, "Dense"],
                         ids=["string", "list", "negative", "infinite", "missing-arg", "unknown-type",
                              "no-type", "not-a-dict"])
def test_malformed_architecture(tmp_path, model_file, layer):
    header, data = split_file(model_file)
    edit_metadata(header, lambda m: m["architecture"]["layers"].__setitem__(0, layer))
    with pytest.raises(ModelFileError):
        load_model(join_file(model_file, header, data))


def test_architecture_missing_entirely(tmp_path, model_file):
    header, data = split_file(model_file)
    edit_metadata(header, lambda m: m.pop("architecture"))
    with pytest.raises(ModelFileError, match="bad architecture"):
        load_model(join_file(model_file, header, data))


def test_metadata_of_another_architecture(tmp_path):
    """The metadata of a 784-64-10 model on the tensors of a 784-16-10 one."""
    small = save_model(tmp_path / "small.safetensors", small_model("784-16-10"))
    other = save_model(tmp_path / "other.safetensors", small_model("784-64-10"))
    header, data = split_file(small)
    other_header, _ = split_file(other)
    header["__metadata__"] = other_header["__metadata__"]
    with pytest.raises(ModelFileError, match=r"layers.0.weights: expected shape \[784, 64\], got \[784, 16\]"):
        load_model(join_file(tmp_path / "swapped.safetensors", header, data))


def test_class_list_must_fit_the_outputs(tmp_path, model_file):
    header, data = split_file(model_file)
    edit_metadata(header, lambda m: m.update(classes=["a", "b"]))
    with pytest.raises(ModelFileError, match="the model has 10 outputs but 2 class names"):
        load_model(join_file(model_file, header, data))
    for bad in ([], "0123456789", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]):
        edit_metadata(header, lambda m, bad=bad: m.update(classes=bad))
        with pytest.raises(ModelFileError, match="class list"):
            load_model(join_file(model_file, header, data))


@pytest.mark.parametrize("offsets", [[-4, 0], [0, 10**12], [8, 4], [0], [0, 4, 8], ["0", "4"], [0.0, 4.0]],
                         ids=["negative", "beyond-end", "backwards", "one", "three", "strings", "floats"])
def test_bad_offsets(tmp_path, model_file, offsets):
    header, data = split_file(model_file)
    header["layers.2.bias"]["data_offsets"] = offsets
    with pytest.raises(ModelFileError):
        load_model(join_file(model_file, header, data))


def test_overlapping_offsets(tmp_path, model_file):
    header, data = split_file(model_file)
    # point the bias of layer 2 into the middle of layer 0's weights (same length: 40 bytes)
    header["layers.2.bias"]["data_offsets"] = [400, 440]
    with pytest.raises(ModelFileError, match="overlap"):
        load_model(join_file(model_file, header, data))


@pytest.mark.parametrize("entry", [[1, 2], {"dtype": "F32", "shape": [10]},
                                   {"dtype": "F32", "shape": [10], "data_offsets": [0, 40], "x": 1},
                                   {"dtype": "F32", "shape": "10", "data_offsets": [0, 40]},
                                   {"dtype": "F32", "shape": [True] * 10, "data_offsets": [0, 4]},
                                   {"dtype": "F32", "shape": [1] * 40, "data_offsets": [0, 4]}],
                         ids=["list", "missing-key", "extra-key", "string-shape", "bool-dims", "too-many-dims"])
def test_malformed_tensor_entries(tmp_path, model_file, entry):
    header, data = split_file(model_file)
    header["layers.2.bias"] = entry
    with pytest.raises(ModelFileError):
        load_model(join_file(model_file, header, data))


def test_checkpoint_that_is_a_plain_model(tmp_path, model_file):
    from digitnet.nn.losses import make_loss
    from digitnet.nn.optim import make_optimizer
    from digitnet.training import Trainer

    model = small_model()
    trainer = Trainer(model, make_loss("cross_entropy"), make_optimizer("sgd", 0.1),
                      (np.zeros((4, 784), np.float32), np.zeros(4, np.uint8)))
    with pytest.raises(ModelFileError, match="not a training checkpoint"):
        trainer.restore_checkpoint(model_file)


# ---------------------------------------------------------------------------------- never pickle
def test_no_pickle_anywhere_in_the_package():
    sources = {p: p.read_text() for p in (SRC / "digitnet").rglob("*.py")}
    for path, text in sources.items():
        for pattern in ("import pickle", "pickle.load", "torch.load(", "joblib.load", "allow_pickle=True"):
            assert pattern not in text, f"{path} uses {pattern}"
        for line in text.splitlines():
            if "np.load(" in line or "numpy.load(" in line:
                assert "allow_pickle=False" in line, f"{path}: {line.strip()}"


# -------------------------------------------------------------------------------------------- CLI
def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digitnet", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_cli_reports_tampered_model_in_one_line(tmp_path, model_file, capsys):
    from digitnet.cli import main

    header, data = split_file(model_file)
    start, stop = header["layers.0.weights"]["data_offsets"]
    header["layers.0.weights"]["data_offsets"][1] += 4
    tampered = join_file(tmp_path / "tampered.safetensors", header, data)
    for command in (["evaluate", str(tampered)], ["predict", str(tampered), "x.csv"],
                    ["submit", str(tampered), "test.csv"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"digitnet {command[0]}: error: " in err
        assert "layers.0.weights" in err and "tampered" in err

    result = cli("evaluate", str(tampered), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"digitnet evaluate: error: {tampered}: tensor 'layers.0.weights' claims bytes {start}..{stop + 4} of "
        f"{len(data)} (needs {stop - start}): truncated or tampered file"]
