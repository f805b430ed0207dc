"""MaxPool2D and AvgPool2D: downsample each channel of an NCHW batch over small windows.

Shapes::

    x [B, C, H, W]  ->  y [B, C, H_out, W_out],   H_out = (H - k) // s + 1   (same for W)

with kernel ``k`` and stride ``s`` (default ``s = k``: windows side by side). A window that would
run past the edge is dropped, as in PyTorch (``ceil_mode=False``), so with H = 7 and k = s = 2 the
last row is unused (and gets a zero gradient).

Both poolings are computed with one strided view per kernel offset ``(i, j)``::

    x_ij = x[:, :, i : i + s*(H_out-1) + 1 : s,  j : j + s*(W_out-1) + 1 : s]     [B, C, H_out, W_out]

``x_ij[b, c, h, w] = x[b, c, h*s + i, w*s + j]`` is element ``(i, j)`` of window ``(h, w)``, so

    max pool:  y = max over (i, j) of x_ij          avg pool:  y = (1 / k^2) * sum over (i, j) of x_ij

is k*k element-wise NumPy operations on whole batches (no loop over samples or windows). With
k = s = 2 on [128, 32, 28, 28] this takes ~3 ms, where ``x.reshape(B, C, H/2, 2, W/2, 2).max(axis=(3, 5))``
takes ~65 ms: NumPy reductions over short strided axes are slow. The case ``s == k`` with H and W
divisible by k (every input in exactly one window) is the fast path: backward then assigns into
``dx`` instead of zero-filling it and accumulating.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from digitnet.errors import ConfigError
from digitnet.nn.base import Layer, register_layer
from digitnet.nn.conv import as_pair, output_size, pair_config, pair_text


class _Pool2D(Layer):
    """Shared window bookkeeping of the two poolings."""

    def __init__(self, kernel_size: int | Sequence[int] = 2, stride: int | Sequence[int] | None = None) -> None:
        super().__init__()
        self.kernel_size = as_pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else as_pair(stride, "stride", 1)
        self._input_shape: tuple[int, ...] | None = None
        self._dtype = np.dtype(np.float32)
        self._matches: list | None = None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3:
            raise ConfigError(f"{type(self).__name__} expects inputs of shape (C, H, W) per sample, "
                              f"got {list(input_shape)}")
        return (input_shape[0], *self._output_hw(input_shape[1], input_shape[2]))

    def _output_hw(self, height: int, width: int) -> tuple[int, int]:
        out_h = output_size(height, self.kernel_size[0], self.stride[0], 0)
        out_w = output_size(width, self.kernel_size[1], self.stride[1], 0)
        if out_h < 1 or out_w < 1:
            raise ConfigError(f"{type(self).__name__} window {pair_text(self.kernel_size)} does not fit "
                              f"a {height}x{width} input")
        return out_h, out_w

    def _check_input(self, x: np.ndarray) -> tuple[int, int]:
        if x.ndim != 4:
            raise ConfigError(f"{type(self).__name__} expects input [B, C, H, W], got {list(x.shape)}")
        return self._output_hw(x.shape[2], x.shape[3])

    def _offset_views(self, array: np.ndarray, out_h: int, out_w: int) -> list[np.ndarray]:
        """``[x_ij for (i, j) in row-major order]``: strided views, element (i, j) of every window."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        return [array[:, :, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw]
                for i in range(kh) for j in range(kw)]

    def _tiles_exactly(self, height: int, width: int) -> bool:
        """Whether every input position lies in exactly one window (the fast path)."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        return (sh, sw) == (kh, kw) and height % kh == 0 and width % kw == 0

    def _grad_buffer(self) -> tuple[np.ndarray, bool]:
        """``dL/dx`` buffer and whether to accumulate (+=) into it rather than assign."""
        batch, channels, height, width = self._input_shape
        grad_in = self.work_buffer("grad_in", self._input_shape, self._dtype)
        if self._tiles_exactly(height, width):
            return grad_in, False
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        grad_in.fill(0)                   # uncovered rows/columns get 0; overlapping windows add up
        return grad_in, (sh < kh or sw < kw)

    def config(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "kernel_size": pair_config(self.kernel_size),
                "stride": pair_config(self.stride)}

    def describe(self) -> str:
        text = pair_text(self.kernel_size)
        return text if self.stride == self.kernel_size else f"{text}, stride {pair_text(self.stride)}"


@register_layer
class MaxPool2D(_Pool2D):
    """Maximum over each ``k x k`` window.

    Backward routes each window's gradient to the one input that was its maximum and gives the
    others 0::

        dL/dx[b, c, h*s + i, w*s + j] += dL/dy[b, c, h, w]   if (i, j) is the argmax of window (h, w)

    The maximum is found as a knockout tournament between the ``k*k`` offset views (for 2x2:
    ``max(max(x_00, x_01), max(x_10, x_11))``), remembering at each match which side won as a
    boolean array. Backward replays the matches top-down: ``g_right = g * won``,
    ``g_left = g * (not won)``. That is ``k*k - 1`` comparisons and maxima forward and as many
    products backward, all whole-batch array operations (about half the passes of a running
    argmax, and no integer index arrays).

    Ties: exactly one winner, the first maximum in row-major order within the window (the right
    side of a match wins only when strictly greater). PyTorch does the same, so gradients agree
    even on constant regions (e.g. the zeros after a ReLU).
    """

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        out_h, out_w = self._check_input(x)
        shape = (*x.shape[:2], out_h, out_w)
        nodes: list[np.ndarray] = self._offset_views(x, out_h, out_w)
        y = self.output_buffer("y", shape, x.dtype, training)
        self._matches = None
        if not training:
            np.copyto(y, nodes[0])
            for view in nodes[1:]:
                np.maximum(y, view, out=y)
            return y
        # rounds[r] lists, in order, ("match", right_won) or ("bye", None) for each node of round r
        rounds: list[list[tuple[str, np.ndarray | None]]] = []
        while len(nodes) > 1:
            entries, winners = [], []
            for m in range(0, len(nodes) - 1, 2):
                left, right = nodes[m], nodes[m + 1]
                final = len(nodes) == 2
                best = y if final else self.work_buffer(f"max_{len(rounds)}_{m}", shape, x.dtype)
                right_won = self.work_buffer(f"won_{len(rounds)}_{m}", shape, np.bool_)
                np.greater(right, left, out=right_won)          # strict: ties go to the left (earlier)
                np.maximum(left, right, out=best)
                entries.append(("match", right_won))
                winners.append(best)
            if len(nodes) % 2:
                entries.append(("bye", None))
                winners.append(nodes[-1])
            rounds.append(entries)
            nodes = winners
        if not rounds:                                          # a 1x1 window
            np.copyto(y, nodes[0])
        self._matches = rounds
        self._input_shape, self._dtype = x.shape, x.dtype
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        if not self.compute_input_grad:
            return None
        if self._matches is None:
            raise RuntimeError("MaxPool2D.backward needs a forward(x, training=True) first")
        grad_in, accumulate = self._grad_buffer()
        out_h, out_w = grad_out.shape[2:]
        leaves = self._offset_views(grad_in, out_h, out_w)
        lost = self.work_buffer("lost", grad_out.shape, np.bool_)
        routed = self.work_buffer("routed", grad_out.shape, grad_out.dtype) if accumulate else None
        grads = [grad_out]
        for r in range(len(self._matches) - 1, -1, -1):         # replay the rounds, last first
            children: list[np.ndarray] = []
            for n, (kind, right_won) in enumerate(self._matches[r]):
                if kind == "bye":
                    if r == 0:                                  # an input that had no match this round
                        self._route(grads[n], leaves[len(children)], accumulate)
                    children.append(grads[n])
                    continue
                if r == 0:                                      # children are inputs: write into dx
                    targets = leaves[len(children):len(children) + 2]
                else:
                    targets = [self.work_buffer(f"grad_{r}_{n}_{side}", grad_out.shape, grad_out.dtype)
                               for side in (0, 1)]
                np.logical_not(right_won, out=lost)
                for target, mask in zip(targets, (lost, right_won), strict=True):
                    if r == 0 and accumulate:
                        np.multiply(grads[n], mask, out=routed)
                        target += routed
                    else:
                        np.multiply(grads[n], mask, out=target)
                children.extend(targets)
            grads = children
        if not self._matches:                                   # a 1x1 window: dx = g
            self._route(grad_out, leaves[0], accumulate)
        return grad_in

    @staticmethod
    def _route(grad: np.ndarray, target: np.ndarray, accumulate: bool) -> None:
        if accumulate:
            target += grad
        else:
            np.copyto(target, grad)


@register_layer
class AvgPool2D(_Pool2D):
    """Mean over each ``k x k`` window.

    Forward: ``y[b, c, h, w] = (1 / (kH*kW)) * sum_{i, j} x[b, c, h*s + i, w*s + j]``.
    Backward: every input of a window receives an equal share of its gradient::

        dL/dx[b, c, h*s + i, w*s + j] += dL/dy[b, c, h, w] / (kH*kW)
    """

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        out_h, out_w = self._check_input(x)
        views = self._offset_views(x, out_h, out_w)
        y = self.output_buffer("y", (*x.shape[:2], out_h, out_w), x.dtype, training)
        np.copyto(y, views[0])
        for view in views[1:]:
            y += view
        y *= x.dtype.type(1.0 / len(views))
        self._input_shape, self._dtype = x.shape, x.dtype
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        if not self.compute_input_grad:
            return None
        grad_in, accumulate = self._grad_buffer()
        out_h, out_w = grad_out.shape[2:]
        share = grad_out                  # backward may overwrite grad_out: scale it in place
        share *= grad_out.dtype.type(1.0 / (self.kernel_size[0] * self.kernel_size[1]))
        for grad_view in self._offset_views(grad_in, out_h, out_w):
            if accumulate:
                grad_view += share
            else:
                np.copyto(grad_view, share)
        return grad_in
