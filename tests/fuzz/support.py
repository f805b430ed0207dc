"""Shared pieces of the fuzz tests: settings, byte mutations, and the "clean failure" check.

Every parser is fed random and mutated inputs and must either succeed or raise a
:class:`~digitnet.errors.DigitnetError`; any other exception, a hang (pytest-timeout) or an
allocation out of proportion to the input (tracemalloc peak above ``64 MB + 100 x input size``)
fails the test and hypothesis prints the smallest input that does it.

CI runs a fixed, derandomized set of examples (a few thousand in all, well under a minute).
To look harder::

    DIGITNET_FUZZ_SCALE=20 DIGITNET_FUZZ_PROFILE=explore pytest tests/fuzz

``DIGITNET_FUZZ_SCALE`` multiplies every test's example count; the ``explore`` profile draws new
random examples on each run (and keeps failures in hypothesis' example database).
"""

from __future__ import annotations

import os
import struct
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from digitnet.errors import DigitnetError

SCALE = float(os.environ.get("DIGITNET_FUZZ_SCALE", "1"))
PROFILE = os.environ.get("DIGITNET_FUZZ_PROFILE", "ci")

# function_scoped_fixture: the tmp_path file is simply overwritten by every example;
# too_slow / data_too_large: some seeds are a few KB and decoding them takes milliseconds.
_QUIET = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", derandomize=True, deadline=None, database=None, print_blob=True,
                          suppress_health_check=_QUIET)
settings.register_profile("explore", derandomize=False, deadline=None, print_blob=True,
                          suppress_health_check=_QUIET)

#: memory a parser may use whatever its input (interpreter noise, small fixed buffers) ...
BASE_BYTES = 64 * 1024 * 1024
#: ... plus this many times the input's size
PER_INPUT_BYTE = 100

#: numbers that break header arithmetic: zero, one, sign and width boundaries
INTERESTING = [0, 1, 2, 7, 8, 255, 256, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
               0xFFFFFFFF, 2**63 - 1, 2**64 - 1]


def fuzz_settings(examples: int) -> settings:
    """The profile's settings with ``examples`` (times DIGITNET_FUZZ_SCALE) examples."""
    return settings(settings.get_profile(PROFILE), max_examples=max(1, int(examples * SCALE)))


class Mutant(bytes):
    """Mutated bytes that remember how they were made (shown when hypothesis reports a failure)."""

    recipe: str = ""

    def __repr__(self) -> str:
        return f"Mutant({self.recipe}, data={bytes(self)!r})"


def mutate(seed: bytes, rng: np.random.Generator, max_ops: int = 4) -> tuple[bytes, list[str]]:
    """``seed`` with 1..max_ops random edits: bit flips, overwritten/inserted/deleted bytes,
    truncation, a duplicated slice, or an interesting integer written over 1, 2, 4 or 8 bytes."""
    data = bytearray(seed)
    done = []
    for _ in range(int(rng.integers(1, max_ops + 1))):
        op = str(rng.choice(["flip", "set", "insert", "delete", "truncate", "duplicate", "number", "number"]))
        pos = int(rng.integers(0, max(len(data), 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << int(rng.integers(0, 8))
        elif op == "set" and data:
            data[pos] = int(rng.integers(0, 256))
        elif op == "insert":
            data[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
        elif op == "delete":
            del data[pos:pos + int(rng.integers(1, 17))]
        elif op == "truncate":
            del data[pos:]
        elif op == "duplicate":
            data[pos:pos] = data[pos:pos + int(rng.integers(1, 65))]
        elif op == "number" and data:
            width = int(rng.choice([1, 2, 4, 8]))
            value = int(rng.choice(INTERESTING)) % (1 << (8 * width))
            order = str(rng.choice(["<", ">"]))
            data[pos:pos + width] = struct.pack(order + {1: "B", 2: "H", 4: "I", 8: "Q"}[width], value)
        done.append(f"{op}@{pos}")
    return bytes(data), done


def mutated(seeds: list[bytes], max_ops: int = 4) -> st.SearchStrategy[bytes]:
    """One of ``seeds``, mutated by :func:`mutate` with a generator seeded by hypothesis.

    One integer per example keeps hypothesis' own cost per example low (a strategy drawing every
    position and byte costs ~3 ms an example, this ~1 ms), so CI affords thousands of examples.
    """
    def mutant(seed_index: int, rng_seed: int) -> bytes:
        """Reproduce with ``mutate(SEEDS[seed_index], np.random.default_rng(rng_seed), max_ops)``."""
        data, ops = mutate(seeds[seed_index], np.random.default_rng(rng_seed), max_ops)
        result = Mutant(data)
        result.recipe = f"seed #{seed_index}, rng {rng_seed}: {', '.join(ops)}"
        return result

    return st.builds(mutant, st.integers(0, len(seeds) - 1), st.integers(0, 2**32 - 1))


class MemoryWatch:
    """Runs a parser and checks its peak traced allocation against the input size.

    Tracing is on only while the parser runs (tracing hypothesis' own engine would make every
    example several times slower).
    """

    def __init__(self) -> None:
        self.worst = 0

    def run(self, fn: Callable[[], Any], input_size: int) -> Any:
        """``fn()``; its result, or None if it raised a DigitnetError. Other exceptions propagate."""
        already = tracemalloc.is_tracing()
        if already:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
        else:
            tracemalloc.start()
            before = 0
        try:
            return fn()
        except DigitnetError as exc:
            assert str(exc).strip(), "an error without a message"
            assert "\n" not in str(exc).strip(), f"a multi-line error message: {exc!r}"
            return None
        finally:
            peak = tracemalloc.get_traced_memory()[1] - before
            if not already:
                tracemalloc.stop()
            self.worst = max(self.worst, peak)
            limit = BASE_BYTES + PER_INPUT_BYTE * input_size
            assert peak <= limit, f"allocated {peak:,} bytes for {input_size:,} bytes of input"
