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
        self._argmax: np.ndarray | None = None

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

    Forward keeps, for each window, the offset ``t = i*kW + j`` of its maximum (the "argmax").
    Backward routes each window's gradient to that one input and gives the others 0::

        dL/dx[b, c, h*s + i, w*s + j] += dL/dy[b, c, h, w]   if (i, j) is the argmax of window (h, w)

    Ties: exactly one winner, the first maximum in row-major order within the window (a later
    offset replaces the running maximum only when strictly greater). PyTorch does the same, so
    gradients agree even on constant regions (e.g. the zeros after a ReLU).
    """

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        out_h, out_w = self._check_input(x)
        batch, channels = x.shape[:2]
        shape = (batch, channels, out_h, out_w)
        views = self._offset_views(x, out_h, out_w)
        y = self.output_buffer("y", shape, x.dtype, training)
        np.copyto(y, views[0])
        if not training:
            for view in views[1:]:
                np.maximum(y, view, out=y)
            self._argmax = None
            return y
        # Running argmax with arithmetic only (np.where / copyto(where=) are ~10x slower here):
        # offsets come in increasing order and argmax < t, so argmax = max(argmax, t * better).
        index_dtype = np.uint8 if len(views) <= 256 else np.int32
        argmax = self.work_buffer("argmax", shape, index_dtype)
        argmax.fill(0)
        better = self.work_buffer("better", shape, np.bool_)
        candidate = self.work_buffer("candidate", shape, index_dtype)
        for t, view in enumerate(views[1:], start=1):
            np.greater(view, y, out=better)
            np.maximum(y, view, out=y)
            np.multiply(better, index_dtype(t), out=candidate)
            np.maximum(argmax, candidate, out=argmax)
        self._argmax = argmax
        self._input_shape, self._dtype = x.shape, x.dtype
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        if not self.compute_input_grad:
            return None
        if self._argmax is None:
            raise RuntimeError("MaxPool2D.backward needs a forward(x, training=True) first")
        grad_in, accumulate = self._grad_buffer()
        out_h, out_w = grad_out.shape[2:]
        is_winner = self.work_buffer("is_winner", grad_out.shape, np.bool_)
        routed = self.work_buffer("routed", grad_out.shape, grad_out.dtype) if accumulate else None
        for t, grad_view in enumerate(self._offset_views(grad_in, out_h, out_w)):
            np.equal(self._argmax, t, out=is_winner)
            if accumulate:
                np.multiply(grad_out, is_winner, out=routed)
                grad_view += routed
            else:
                np.multiply(grad_out, is_winner, out=grad_view)
        return grad_in


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
