"""The fast twins of the optimizers: in-place updates through scratch arrays, in cache-sized blocks.

An update is several element-wise passes over a parameter, its gradient and its state. A parameter
with more than 4 blocks' worth of scalars is updated in blocks of rows of about ``BLOCK_SIZE``
scalars (256 KB in float32), so that a block's param, grad, state and scratch stay in the L2 cache
between passes; smaller parameters fit in the cache whole. Element-wise updates give the same
numbers in blocks as on the whole array, so each of the workers' threads takes a run of consecutive
blocks (small parameters are updated on the calling thread).

On one thread the blocks pay only where the cache needs them: on an Intel Xeon they made the
update of a 784x800 matrix 1.4x as fast, on an AMD EPYC with a large L3 cache 1.3x as slow (six
NumPy calls per block). So there, the first ``TRIAL_UPDATES`` updates of each large parameter
alternate between blocks and whole-array passes, timed, and the faster layout (by median) is kept
for that parameter; as both give the same numbers, the trial changes no result. The state arrays
(``velocity``, ``m``, ``v``) have the names the reference optimizers use, so a checkpoint resumes
with either.
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np

from digitnet.kernels.parallel import SERIAL, Workers, split
from digitnet.kernels.registry import kernel_for
from digitnet.nn.adam import Adam, AdamW
from digitnet.nn.optim import SGD, Pairs

#: per-parameter slots that are scratch space, not state worth saving in a checkpoint
_SCRATCH = "scratch"
_SCRATCH_GRAD = "scratch_grad"
BLOCK_SIZE = 65536
#: updates of a large parameter on one thread timed to choose its layout (half in blocks, half whole)
TRIAL_UPDATES = 8
#: the clock of those trials (tests replace it)
clock = time.perf_counter


class BlockedUpdates:
    """Mixin: :meth:`step` in row blocks through :meth:`_update`, with state created before blocking."""

    workers: Workers = SERIAL

    @classmethod
    def adopt(cls, reference):
        fast = object.__new__(cls)
        fast.__dict__.update(reference.__dict__)
        return fast

    def step(self, pairs: Pairs) -> None:
        """Apply one update to every ``(param, grad)`` pair in place, large ones in blocks of rows."""
        self.begin_step(pairs)
        shared = self.workers.enabled and self.workers.threads > 1
        blocks = []                                   # (param, grad, state) of every block of the large ones
        for index, (param, grad) in enumerate(pairs):
            state = self.state[index]
            if param.size <= 4 * BLOCK_SIZE or param.ndim == 0:
                self._update(param, grad, state)
                continue
            for name in self._slot_names(param):      # created here, not by two threads at once
                self._slot(state, name, param)
            if shared:
                blocks.extend(self._blocks(param, grad, state))
            else:
                self._update_on_one_thread(index, param, grad, state)
        if blocks:                    # each thread takes a run of consecutive blocks: few hand-overs
            lanes = split(len(blocks), self.workers.threads)
            self.workers.run(lambda lane: [self._update(*block) for block in blocks[lane]], lanes)

    @staticmethod
    def _blocks(param, grad, state) -> list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
        """``(param, grad, state)`` views of blocks of about ``BLOCK_SIZE`` scalars (rows of the arrays)."""
        rows = max(1, BLOCK_SIZE * param.shape[0] // param.size)
        return [(param[block], grad[block], {k: v[block] for k, v in state.items()})
                for block in (slice(start, start + rows) for start in range(0, param.shape[0], rows))]

    def _update_on_one_thread(self, index: int, param, grad, state) -> None:
        """One update of a large parameter in the layout measured faster for it (see the module docstring)."""
        key = (index, param.shape)
        layout = self.__dict__.setdefault("_layouts", {}).get(key)
        if layout is not None:
            self._update_in(layout, param, grad, state)
            return
        trials = self.__dict__.setdefault("_trials", {}).setdefault(key, {"blocks": [], "whole": []})
        which = "blocks" if len(trials["blocks"]) <= len(trials["whole"]) else "whole"
        start = clock()
        self._update_in(which, param, grad, state)
        trials[which].append(clock() - start)
        if len(trials["whole"]) * 2 >= TRIAL_UPDATES:
            self._layouts[key] = min(trials, key=lambda name: statistics.median(trials[name]))
            del self._trials[key]

    def _update_in(self, layout: str, param, grad, state) -> None:
        if layout == "whole":
            self._update(param, grad, state)
        else:
            for block in self._blocks(param, grad, state):
                self._update(*block)

    @staticmethod
    def _slot(state: dict[str, np.ndarray], name: str, like: np.ndarray) -> np.ndarray:
        """The state array ``name`` for one parameter, zeros of ``like``'s shape on first use."""
        if name not in state:
            state[name] = np.zeros_like(like)
        return state[name]


@kernel_for(SGD)
class FastSGD(BlockedUpdates, SGD):
    """:class:`~digitnet.nn.optim.SGD` in place: ``param -= lr * g`` as in-place passes through a scratch array."""

    def _update(self, param, grad, state):
        dtype = param.dtype.type
        lr = dtype(self.lr)
        scratch = self._slot(state, _SCRATCH, param)
        g = grad
        if self.decays(param):
            np.multiply(param, dtype(self.weight_decay), out=scratch)
            scratch += grad                                   # g = grad + wd * param
            g = scratch
        if self.momentum == 0:
            np.multiply(g, lr, out=scratch)
            param -= scratch
            return
        velocity = self._slot(state, "velocity", param)
        velocity *= dtype(self.momentum)
        velocity += g
        if self.nesterov:
            # param -= lr * (g + momentum * v), as two in-place subtractions
            np.multiply(g, lr, out=scratch)
            param -= scratch
            np.multiply(velocity, dtype(self.lr * self.momentum), out=scratch)
        else:
            np.multiply(velocity, lr, out=scratch)
        param -= scratch

    def _slot_names(self, param):
        return [_SCRATCH, "velocity"] if self.momentum else [_SCRATCH]


@kernel_for(Adam)
class FastAdam(BlockedUpdates, Adam):
    """:class:`~digitnet.nn.adam.Adam` (and AdamW) in place: each formula as in-place passes through scratch arrays."""

    def _update(self, param, grad, state):
        dtype = param.dtype.type
        if self.decoupled:
            if self.decays(param):
                param *= dtype(1 - self.lr * self.weight_decay)
        elif self.decays(param):
            # coupled L2: g = grad + wd * param, in a second scratch array (grad itself is not ours)
            decayed = self._slot(state, _SCRATCH_GRAD, param)
            np.multiply(param, dtype(self.weight_decay), out=decayed)
            decayed += grad
            grad = decayed
        m = self._slot(state, "m", param)
        v = self._slot(state, "v", param)
        scratch = self._slot(state, _SCRATCH, param)
        t = self.steps
        m *= dtype(self.beta1)
        np.multiply(grad, dtype(1 - self.beta1), out=scratch)
        m += scratch
        v *= dtype(self.beta2)
        np.multiply(grad, grad, out=scratch)
        scratch *= dtype(1 - self.beta2)
        v += scratch
        # step = lr * m_hat / (sqrt(v_hat) + eps), with both corrections folded into scalars:
        # sqrt(v_hat) = sqrt(v) / sqrt(1 - beta2**t),  m_hat = m / (1 - beta1**t)
        correction1 = 1 - self.beta1 ** t
        correction2 = 1 - self.beta2 ** t
        np.sqrt(v, out=scratch)
        scratch *= dtype(1 / math.sqrt(correction2))
        scratch += dtype(self.eps)
        np.divide(m, scratch, out=scratch)
        scratch *= dtype(self.lr / correction1)
        param -= scratch

    def _slot_names(self, param):
        coupled_decay = not self.decoupled and self.decays(param)
        return ["m", "v", _SCRATCH] + ([_SCRATCH_GRAD] if coupled_decay else [])


@kernel_for(AdamW)
class FastAdamW(FastAdam, AdamW):
    """:class:`~digitnet.nn.adam.AdamW` in place (:class:`FastAdam` with decoupled decay)."""
