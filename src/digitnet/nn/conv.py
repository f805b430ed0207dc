"""Conv2D: a 2-D convolution (cross-correlation, as in every deep-learning framework) in NumPy.

Shapes (NCHW, like PyTorch)::

    x        [B, C_in, H, W]
    weights  [C_out, C_in, kH, kW]        (PyTorch's layout: cross-checks need no transposes)
    bias     [C_out]
    y        [B, C_out, H_out, W_out],    H_out = (H + 2*pH - kH) // sH + 1  (same for W)

Forward, with ``x_pad`` the input with ``pH``/``pW`` zeros around each image::

    y[b, o, h, w] = bias[o] + sum_{c, i, j} weights[o, c, i, j] * x_pad[b, c, h*sH + i, w*sW + j]

How it is computed (im2col). Each output pixel ``p = (b, h, w)`` sees a patch of
``K = kH * kW * C_in`` input values. Copying every patch into a row of a matrix turns the whole
convolution into ONE matrix product::

    cols[p, (i, j, c)] = x_pad[b, c, h*sH + i, w*sW + j]             cols  [P, K],  P = B*H_out*W_out
    W_mat[o, (i, j, c)] = weights[o, c, i, j]                         W_mat [C_out, K]
    y_mat = W_mat @ cols.T                                            y_mat [C_out, P]
    y[b, o, h, w] = y_mat[o, (b, h, w)] + bias[o]

Backward, given ``g = dL/dy`` ``[B, C_out, H_out, W_out]`` seen as ``g_mat [C_out, P]``::

    dL/dbias[o]    = sum_p g_mat[o, p]
    dL/dW_mat      = g_mat @ cols                                     [C_out, K]  (one GEMM)
    dL/dweights[o, c, i, j] = dL/dW_mat[o, (i, j, c)]
    dL/dx_pad[b, c, h*sH + i, w*sW + j] += sum_o g_mat[o, (b, h, w)] * weights[o, c, i, j]

The last line is col2im. It is done as ``kH * kW`` matrix products, one per kernel offset
``(i, j)``: ``g_mat.T @ weights[:, :, i, j]`` is ``[P, C_in]`` and is added to the strided slice
of ``dx_pad`` that offset touched. ``dL/dx`` is ``dL/dx_pad`` without its border.

Implementation choices, measured on the target machine (2 cores, OpenBLAS, float32, batch 128;
see docs/CNN.md for the numbers):

- the padded input is kept channels-last (NHWC) internally: the im2col copy then moves runs of
  ``C_in`` contiguous floats, 1.5x faster than from NCHW for C_in = 32; with C_in = 1 the
  patches are copied the other way round (``cols.T`` as a contiguous ``[K, P]`` array, whose
  copy moves whole image rows, 5x faster) and BLAS reads it transposed;
- the products are arranged so their outputs come out channel-major (``[C_out, P]``): turning
  that into NCHW copies runs of ``H_out*W_out`` floats rather than single floats;
- col2im as ``kH*kW`` products added into contiguous-source slices is 1.4x faster than one big
  product followed by ``kH*kW`` strided slice-adds, and needs a ``[P, C_in]`` buffer instead of
  a ``[P, K]`` one;
- all scratch arrays are work buffers reused across batches; ``dL/dx`` is skipped when
  ``compute_input_grad`` is False (the first layer of a model);
- in inference mode the batch is processed in chunks so ``cols`` stays small (a 2,048-image
  prediction batch would otherwise need a 1.3 GB patch matrix).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from digitnet.errors import ConfigError
from digitnet.nn.base import Layer, register_layer
from digitnet.nn.init import INITIALIZERS, init_weights

#: in inference mode, images per chunk are chosen so the patch matrix stays below this size
INFERENCE_COLS_BYTES = 32 * 2**20


def as_pair(value: int | Sequence[int], name: str, minimum: int) -> tuple[int, int]:
    """``3 -> (3, 3)``, ``[3, 5] -> (3, 5)``; every entry an integer >= ``minimum``.

    Raises:
        ConfigError: not an int or a pair of ints, or too small.
    """
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
          and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value)):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ConfigError(f"{name} must be an integer or a pair of integers, got {value!r}")
    if min(pair) < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value!r}")
    return pair


def pair_config(pair: tuple[int, int]) -> int | list[int]:
    """The JSON form of a pair: a plain int when both entries are equal."""
    return pair[0] if pair[0] == pair[1] else [pair[0], pair[1]]


def pair_text(pair: tuple[int, int]) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length along one axis: ``(size + 2*padding - kernel) // stride + 1`` (0 if it does not fit).

    This is PyTorch's formula (``ceil_mode=False``): a window that would run past the (padded)
    edge is dropped, so trailing rows/columns may be unused.
    """
    span = size + 2 * padding - kernel
    return span // stride + 1 if span >= 0 else 0


@register_layer
class Conv2D(Layer):
    """2-D convolution layer; see the module docstring for the math and the shapes.

    Args:
        in_channels: ``C_in``, channels of the input (1 for MNIST images).
        out_channels: ``C_out``, number of filters.
        kernel_size: ``k`` or ``(kH, kW)``.
        stride: step between windows, ``s`` or ``(sH, sW)``.
        padding: zeros added on each side, ``p`` or ``(pH, pW)``.
        init: "he" (ReLU networks), "xavier" or "lecun", with ``fan_in = C_in*kH*kW`` and
            ``fan_out = C_out*kH*kW`` (PyTorch's convention). The bias starts at 0.
        rng: generator for the initial weights.
    """

    trainable = True
    needs_rng = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        init: str = "he",
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"Conv2D {name} must be a positive integer, got {value!r}")
        if init not in INITIALIZERS:
            raise ConfigError(f"unknown initialisation {init!r} (choose from {', '.join(INITIALIZERS)})")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = as_pair(kernel_size, "kernel_size", 1)
        self.stride = as_pair(stride, "stride", 1)
        self.padding = as_pair(padding, "padding", 0)
        self.init = init
        kh, kw = self.kernel_size
        rng = rng if rng is not None else np.random.default_rng(0)
        shape = (self.out_channels, self.in_channels, kh, kw)
        self.params = {
            "weights": init_weights(shape, self.in_channels * kh * kw, self.out_channels * kh * kw,
                                    init, rng),
            "bias": np.zeros(self.out_channels, dtype=np.float32),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        # C_in = 1: store the patches transposed (see the module docstring)
        self._cols_transposed = self.in_channels == 1
        self._cache: tuple[tuple[int, ...], np.ndarray] | None = None

    # -- shapes -----------------------------------------------------------------------------------
    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3 or input_shape[0] != self.in_channels:
            raise ConfigError(f"Conv2D expects inputs of shape ({self.in_channels}, H, W) per sample, "
                              f"got {list(input_shape)}")
        height, width = self._output_hw(input_shape[1], input_shape[2])
        return (self.out_channels, height, width)

    def _output_hw(self, height: int, width: int) -> tuple[int, int]:
        out_h = output_size(height, self.kernel_size[0], self.stride[0], self.padding[0])
        out_w = output_size(width, self.kernel_size[1], self.stride[1], self.padding[1])
        if out_h < 1 or out_w < 1:
            raise ConfigError(f"Conv2D kernel {pair_text(self.kernel_size)} with padding "
                              f"{pair_text(self.padding)} does not fit a {height}x{width} input")
        return out_h, out_w

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(f"Conv2D expects input [B, {self.in_channels}, H, W], got {list(x.shape)}")
        batch, _, height, width = x.shape
        out_h, out_w = self._output_hw(height, width)
        weights = self.params["weights"]
        dtype = np.result_type(x, weights)
        # W_mat[o, (i, j, c)] = weights[o, c, i, j]; tiny, rebuilt because the optimizer changes weights
        w_mat = weights.transpose(0, 2, 3, 1).reshape(self.out_channels, -1).astype(dtype, copy=False)
        y = self.output_buffer("y", (batch, self.out_channels, out_h, out_w), dtype, training)
        if training:
            cols = self._forward_chunk(x, y, w_mat, "")
            self._cache = (x.shape, cols)
            return y
        # inference: chunks of images, so the patch matrix stays small; no cache for backward
        self._cache = None
        patch_bytes = out_h * out_w * w_mat.shape[1] * dtype.itemsize
        chunk = max(1, INFERENCE_COLS_BYTES // max(patch_bytes, 1))
        for start in range(0, batch, chunk):
            self._forward_chunk(x[start:start + chunk], y[start:start + chunk], w_mat, "inference_")
        return y

    def _forward_chunk(self, x: np.ndarray, y: np.ndarray, w_mat: np.ndarray, prefix: str) -> np.ndarray:
        """Write the convolution of ``x`` into ``y`` (both NCHW); returns the patch matrix (a work buffer)."""
        batch, out_channels, out_h, out_w = y.shape
        x_pad = self._padded_input(x, y.dtype, prefix)
        cols = self._im2col(x_pad, out_h, out_w, prefix)
        # cols is [P, K] (possibly a transposed view): y_mat = W_mat @ cols.T, channel-major [C_out, P]
        y_mat = self.work_buffer(prefix + "y_mat", (out_channels, batch * out_h * out_w), y.dtype)
        np.matmul(w_mat, cols.T, out=y_mat)
        bias = self.params["bias"].astype(y.dtype, copy=False)
        # y[b, o] = y_mat[o, b] + bias[o]: one pass that transposes runs of H_out*W_out floats
        np.add(y_mat.reshape(out_channels, batch, out_h * out_w).transpose(1, 0, 2), bias[None, :, None],
               out=y.reshape(batch, out_channels, out_h * out_w))
        return cols

    def _padded_input(self, x: np.ndarray, dtype: np.dtype, prefix: str) -> np.ndarray:
        """``x`` as NHWC ``[B, H + 2pH, W + 2pW, C_in]`` with a zero border (a reused work buffer).

        The border is zeroed once when the buffer is allocated; later calls overwrite only the
        interior, so the border stays zero.
        """
        batch, channels, height, width = x.shape
        (pad_h, pad_w) = self.padding
        if pad_h == 0 and pad_w == 0 and channels == 1:
            return x.reshape(batch, height, width, 1)          # NCHW with C=1 is already NHWC
        shape = (batch, height + 2 * pad_h, width + 2 * pad_w, channels)
        name = prefix + "x_pad"
        fresh = self._work.get(name) is None or self._work[name].shape != shape \
            or self._work[name].dtype != dtype
        x_pad = self.work_buffer(name, shape, dtype)
        if fresh:
            x_pad.fill(0)
        x_pad[:, pad_h:pad_h + height, pad_w:pad_w + width, :] = x.transpose(0, 2, 3, 1)
        return x_pad

    def _im2col(self, x_pad: np.ndarray, out_h: int, out_w: int, prefix: str) -> np.ndarray:
        """The patch matrix ``cols [P, K]``: ``cols[(b, h, w), (i, j, c)] = x_pad[b, h*sH + i, w*sW + j, c]``.

        Built with one copy from a strided window view (no Python loop). For C_in = 1 the buffer
        is laid out as ``[K, P]`` and its transpose (a view) is returned.
        """
        batch, _, _, channels = x_pad.shape
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        # windows[b, h, w, c, i, j] = x_pad[b, h*sH + i, w*sW + j, c]   (a view, no copy)
        windows = sliding_window_view(x_pad, (kh, kw), axis=(1, 2))[:, ::sh, ::sw][:, :out_h, :out_w]
        if self._cols_transposed:
            cols_t = self.work_buffer(prefix + "cols", (kh, kw, channels, batch, out_h, out_w), x_pad.dtype)
            np.copyto(cols_t, windows.transpose(4, 5, 3, 0, 1, 2))
            return cols_t.reshape(kh * kw * channels, -1).T
        cols = self.work_buffer(prefix + "cols", (batch, out_h, out_w, kh, kw, channels), x_pad.dtype)
        np.copyto(cols, windows.transpose(0, 1, 2, 4, 5, 3))
        return cols.reshape(batch * out_h * out_w, -1)

    # -- backward ---------------------------------------------------------------------------------
    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        if self._cache is None:
            raise RuntimeError("Conv2D.backward needs a forward(x, training=True) first")
        x_shape, cols = self._cache
        batch, out_channels, out_h, out_w = grad_out.shape
        dtype = grad_out.dtype
        # g_mat[o, (b, h, w)] = grad_out[b, o, h, w]: a copy moving runs of H_out*W_out floats
        g_mat = self.work_buffer("g_mat", (out_channels, batch, out_h * out_w), dtype)
        np.copyto(g_mat, grad_out.reshape(batch, out_channels, out_h * out_w).transpose(1, 0, 2))
        g_mat = g_mat.reshape(out_channels, -1)

        np.sum(g_mat, axis=1, out=self.grads["bias"])
        grad_w_mat = self.work_buffer("grad_w_mat", (out_channels, cols.shape[1]), dtype)
        np.matmul(g_mat, cols, out=grad_w_mat)                             # dL/dW_mat = g_mat @ cols
        kh, kw = self.kernel_size
        np.copyto(self.grads["weights"],
                  grad_w_mat.reshape(out_channels, kh, kw, self.in_channels).transpose(0, 3, 1, 2))
        if not self.compute_input_grad:
            return None
        return self._input_grad(g_mat, x_shape, out_h, out_w)

    def _input_grad(self, g_mat: np.ndarray, x_shape: tuple[int, ...], out_h: int, out_w: int) -> np.ndarray:
        """col2im: ``dL/dx`` ``[B, C_in, H, W]`` from ``g_mat [C_out, P]``, one product per kernel offset."""
        batch, channels, height, width = x_shape
        (kh, kw), (sh, sw), (pad_h, pad_w) = self.kernel_size, self.stride, self.padding
        dtype = g_mat.dtype
        # weights_by_offset[i, j] = weights[:, :, i, j] as a contiguous [C_out, C_in] matrix
        weights_by_offset = np.ascontiguousarray(self.params["weights"].transpose(2, 3, 0, 1), dtype=dtype)
        grad_pad = self.work_buffer("grad_x_pad", (batch, height + 2 * pad_h, width + 2 * pad_w, channels),
                                    dtype)
        grad_pad.fill(0)
        contribution = self.work_buffer("grad_offset", (batch * out_h * out_w, channels), dtype)
        contribution_4d = contribution.reshape(batch, out_h, out_w, channels)
        for i in range(kh):
            for j in range(kw):
                # contribution[(b, h, w), c] = sum_o g_mat[o, (b, h, w)] * weights[o, c, i, j]
                np.matmul(g_mat.T, weights_by_offset[i, j], out=contribution)
                grad_pad[:, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw, :] += contribution_4d
        grad_in = self.work_buffer("grad_in", x_shape, dtype)
        np.copyto(grad_in, grad_pad[:, pad_h:pad_h + height, pad_w:pad_w + width, :].transpose(0, 3, 1, 2))
        return grad_in

    # -- description ------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"type": "Conv2D", "in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": pair_config(self.kernel_size), "stride": pair_config(self.stride),
                "padding": pair_config(self.padding), "init": self.init}

    def describe(self) -> str:
        text = f"{self.in_channels}->{self.out_channels} k{pair_text(self.kernel_size)}"
        if self.stride != (1, 1):
            text += f" s{pair_text(self.stride)}"
        if self.padding != (0, 0):
            text += f" p{pair_text(self.padding)}"
        return f"{text} ({self.init})"

    def release_buffers(self) -> None:
        super().release_buffers()
        self._cache = None
