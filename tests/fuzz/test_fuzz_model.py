"""Fuzzing the model loader (digitnet.io): damaged bytes and hand-edited JSON headers and metadata."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from digitnet.io import load_model, read_safetensors, save_model
from digitnet.nn.sequential import Sequential
from tests.fuzz.support import INTERESTING, fuzz_settings, mutated

pytestmark = pytest.mark.timeout(60)


def _seed_files(tmp_path_factory=None) -> list[bytes]:
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="digitnet-fuzz-"))
    seeds = []
    for spec, kwargs in [("784-4-10", {}), ("784-3-2-10", {"dropout": 0.5, "activation": "tanh"}),
                         ("784-2-10", {"activation": "sigmoid", "output_activation": "softmax"})]:
        model = Sequential.from_spec(spec, rng=np.random.default_rng(0), **kwargs)
        seeds.append(save_model(folder / "m.safetensors", model, metrics={"test_accuracy": 0.5}).read_bytes())
    (folder / "m.safetensors").unlink()
    folder.rmdir()
    return seeds


SEEDS = _seed_files()


def _split(raw: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _join(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.sampled_from(INTERESTING + [-1, -(2**63), 10**30, 0.5, 1e308])
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8)


def _paths(value, prefix=()):
    """Every (path) to a value inside nested dicts and lists."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _set(root, path, value):
    target = root
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


@st.composite
def edited_headers(draw) -> bytes:
    """A valid model file whose JSON header or digitnet metadata has 1-3 values replaced or removed."""
    header, data = _split(draw(st.sampled_from(SEEDS)))
    meta = json.loads(header["__metadata__"]["digitnet"])
    for _ in range(draw(st.integers(1, 3))):
        root = meta if draw(st.booleans()) else header
        paths = [p for p in _paths(root) if p and not (root is header and p[0] == "__metadata__")]
        path = draw(st.sampled_from(paths))
        if draw(st.integers(0, 4)) == 0:
            parent = root
            for key in path[:-1]:
                parent = parent[key]
            del parent[path[-1]]
        else:
            _set(root, path, draw(JSON_VALUES))
    header["__metadata__"]["digitnet"] = json.dumps(meta)
    return _join(header, data)


def check(loaded) -> None:
    if loaded is not None:
        for array in loaded.model.state_dict().values():
            assert array.dtype == np.float32 and np.all(np.isfinite(array))
        assert loaded.model.output_shapes()[-1] == (len(loaded.classes),)


def load(tmp_path, data: bytes):
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    return lambda: load_model(path)


@fuzz_settings(600)
@given(data=edited_headers())
def test_edited_headers_and_metadata(memory, tmp_path, data):
    check(memory.run(load(tmp_path, data), len(data)))


@fuzz_settings(600)
@given(data=mutated(SEEDS))
def test_mutated_bytes(memory, tmp_path, data):
    check(memory.run(load(tmp_path, data), len(data)))


@fuzz_settings(300)
@given(data=st.binary(max_size=64) | st.builds(lambda n, rest: struct.pack("<Q", n) + rest,
                                               st.sampled_from(INTERESTING), st.binary(max_size=64)))
def test_random_bytes(memory, tmp_path, data):
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    memory.run(lambda: read_safetensors(path), len(data))


def test_seeds_are_valid(tmp_path):
    for data in SEEDS:
        check(load(tmp_path, data)())
