"""Conv2D: a 2-D convolution (cross-correlation, as in every deep-learning framework) in NumPy.

Shapes (NCHW, like PyTorch)::

    x        [B, C_in, H, W]
    weights  [C_out, C_in, kH, kW]        (PyTorch's layout: cross-checks need no transposes)
    bias     [C_out]
    y        [B, C_out, H_out, W_out],    H_out = (H + 2*pH - kH) // sH + 1  (same for W)

Forward, with ``x_pad`` the input with ``pH``/``pW`` zeros around each image::

    y[b, o, h, w] = bias[o] + sum_{c, i, j} weights[o, c, i, j] * x_pad[b, c, h*sH + i, w*sW + j]

Backward, given ``g = dL/dy``::

    dL/dbias[o]             = sum_{b, h, w} g[b, o, h, w]
    dL/dweights[o, c, i, j] = sum_{b, h, w} g[b, o, h, w] * x_pad[b, c, h*sH + i, w*sW + j]
    dL/dx_pad[b, c, h*sH + i, w*sW + j] += sum_o g[b, o, h, w] * weights[o, c, i, j]

and ``dL/dx`` is ``dL/dx_pad`` without its border. Two algorithms compute these sums.

**im2col** (any stride). Each output pixel ``p = (b, h, w)`` sees a patch of ``K = kH*kW*C_in``
input values. Copying every patch into a row of a matrix turns the convolution into ONE matrix
product::

    cols[p, (i, j, c)] = x_pad[b, c, h*sH + i, w*sW + j]             cols  [P, K],  P = B*H_out*W_out
    W_mat[o, (i, j, c)] = weights[o, c, i, j]                         W_mat [C_out, K]
    y_mat = W_mat @ cols.T                                            y_mat [C_out, P]
    y[b, o, h, w] = y_mat[o, (b, h, w)] + bias[o]
    dL/dW_mat = g_mat @ cols,    g_mat[o, (b, h, w)] = g[b, o, h, w]          (one product)
    dL/dx_pad: for each offset (i, j), g_mat.T @ weights[:, :, i, j] ([P, C_in]) is added to
               the strided slice of dx_pad that offset touched                  (col2im)

**Fourier** (stride 1; :mod:`digitnet.nn.fourier`): the convolution theorem turns the sums over
kernel offsets into one product per frequency; the sum over channels stays a matrix product,
``[B, C_in] @ [C_in, C_out]`` per frequency.

Implementation choices, measured on the target machine (2 cores, OpenBLAS, float32, batch 128;
docs/CNN.md has the numbers):

- "auto" uses Fourier for stride-1 layers with at least 2 input channels and 3x3 or larger
  kernels: for 32 -> 64 channels, 5x5, on 14x14 it is 2.7x faster than im2col (whose three
  products alone, 7.7 GFLOP, take longer than PyTorch's whole training step); im2col for the
  first layer (C_in = 1: its product has only K = kH*kW columns) and for strides > 1;
- im2col keeps the padded input channels-last (NHWC): the patch copy then moves runs of
  ``C_in`` floats, 1.5x faster than from NCHW for C_in = 32; with C_in = 1 the patches are
  stored offset-major (``[K, B, H_out*W_out]``: the copy moves image rows, 5x faster) and one
  small product per image writes NCHW directly;
- the products are arranged so their outputs come out channel-major (``[C_out, P]``): turning
  that into NCHW copies runs of ``H_out*W_out`` floats rather than single floats; the bias is
  added to the contiguous rows before that copy (3x faster than a broadcast add into the
  transposed view);
- col2im as ``kH*kW`` products added into contiguous-source slices is 1.4x faster than one big
  product followed by ``kH*kW`` strided slice-adds, and needs a ``[P, C_in]`` buffer instead of
  a ``[P, K]`` one;
- all scratch arrays are work buffers reused across batches; ``dL/dx`` is skipped when
  ``compute_input_grad`` is False (the first layer of a model);
- in inference mode the batch is processed in chunks so the scratch arrays stay small (a
  2,048-image prediction batch would otherwise need a 1.3 GB patch matrix).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from digitnet.errors import ConfigError
from digitnet.nn.base import Layer, register_layer
from digitnet.nn.fourier import FourierPlan
from digitnet.nn.init import INITIALIZERS, init_weights

#: in inference mode, images per chunk are chosen so the scratch arrays stay below about this size
INFERENCE_BYTES = 32 * 2**20
#: "auto" convolves batches smaller than this by im2col (see Conv2D.uses_fourier)
FOURIER_MIN_BATCH = 16
ALGORITHMS = ("auto", "im2col", "fourier")


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
        algorithm: "im2col", "fourier" (stride 1 only; see :mod:`digitnet.nn.fourier`) or
            "auto": Fourier where it is measurably faster (see :meth:`uses_fourier`; e.g. 32 -> 64
            channels with 5x5 kernels), else im2col. Both give the same results up to float32
            rounding.
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
        algorithm: str = "auto",
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
        if algorithm not in ALGORITHMS:
            raise ConfigError(f"unknown convolution algorithm {algorithm!r} (choose from {', '.join(ALGORITHMS)})")
        if algorithm == "fourier" and self.stride != (1, 1):
            raise ConfigError("the fourier convolution algorithm needs stride 1")
        self.algorithm = algorithm
        kh, kw = self.kernel_size
        rng = rng if rng is not None else np.random.default_rng(0)
        shape = (self.out_channels, self.in_channels, kh, kw)
        self.params = {
            "weights": init_weights(shape, self.in_channels * kh * kw, self.out_channels * kh * kw,
                                    init, rng),
            "bias": np.zeros(self.out_channels, dtype=np.float32),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._cache: dict[str, Any] | None = None
        self._plans: dict[tuple[int, int, str], FourierPlan] = {}

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

    def uses_fourier(self, batch: int | None = None) -> bool:
        """Whether forward/backward go through the convolution theorem (see ``algorithm``).

        "auto" takes Fourier for stride 1, at least 2 input channels, kernels of 3x3 or more and
        batches of at least FOURIER_MIN_BATCH images (``batch`` None: a large batch). Measured on
        MNIST-sized layers (batch 128, forward + backward), Fourier vs im2col: 32->64 5x5 on 14x14
        2.7x faster, 32->64 3x3 on 14x14 1.3x, 64->64 3x3 on 7x7 1.3x, 2->8 5x5 on 28x28 2x; but
        1->32 5x5 on 28x28 5x slower (with one input channel im2col's product is tiny and the
        transforms of the 32 outputs dominate). For a few images the kernels' transform, paid once
        per call, dominates: one image through 32->64 3x3 takes 0.9 ms by Fourier, 0.2 ms by im2col.
        """
        if self.algorithm != "auto":
            return self.algorithm == "fourier"
        kh, kw = self.kernel_size
        return self.stride == (1, 1) and self.in_channels >= 2 and kh * kw >= 9 and \
            (batch is None or batch >= FOURIER_MIN_BATCH)

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(f"Conv2D expects input [B, {self.in_channels}, H, W], got {list(x.shape)}")
        batch, _, height, width = x.shape
        out_h, out_w = self._output_hw(height, width)
        dtype = np.result_type(x, self.params["weights"])
        y = self.output_buffer("y", (batch, self.out_channels, out_h, out_w), dtype, training)
        fourier = self.uses_fourier(batch)
        if batch == 0:                    # nothing to compute (and reshapes of empty arrays are ambiguous)
            self._cache = {"algorithm": "empty", "x_shape": x.shape} if training else None
            return y
        if training:
            self._cache = (self._forward_fourier if fourier else self._forward_im2col)(x, y, "")
            return y
        # inference: chunks of images keep the scratch arrays small; nothing is kept for backward
        self._cache = None
        if fourier:
            plan = self._plan(height, width, dtype)
            per_image = plan.freq_h * plan.freq_w * (self.in_channels + self.out_channels) * 2 * dtype.itemsize
        else:
            per_image = out_h * out_w * self.in_channels * self.kernel_size[0] * self.kernel_size[1]
            per_image *= dtype.itemsize
        chunk = max(1, INFERENCE_BYTES // max(per_image, 1))
        for start in range(0, batch, chunk):
            part = slice(start, start + chunk)
            (self._forward_fourier if fourier else self._forward_im2col)(x[part], y[part], "inference_")
        return y

    def _forward_im2col(self, x: np.ndarray, y: np.ndarray, prefix: str) -> dict[str, Any]:
        """Write the convolution of ``x`` into ``y`` (both NCHW) by im2col and one matrix product."""
        batch, out_channels, out_h, out_w = y.shape
        weights = self.params["weights"]
        # W_mat[o, (i, j, c)] = weights[o, c, i, j]; tiny, rebuilt because the optimizer changes weights
        w_mat = weights.transpose(0, 2, 3, 1).reshape(out_channels, -1).astype(y.dtype, copy=False)
        bias = self.params["bias"].astype(y.dtype, copy=False)
        x_pad = self._padded_input(x, y.dtype, prefix)
        cols = self._im2col(x_pad, out_h, out_w, prefix)
        if cols.ndim == 3:
            # C_in = 1: cols is [K + 1, B, H_out*W_out] whose last row is ones, so with the bias as
            # an extra column of W_mat one product per image writes y (NCHW) bias included
            np.matmul(self._weights_with_bias(y.dtype), cols.transpose(1, 0, 2), out=y.reshape(batch, out_channels, -1))
        else:
            # y_mat = W_mat @ cols.T is channel-major [C_out, P]; the bias goes onto its contiguous
            # rows, then one copy moving runs of H_out*W_out floats makes it NCHW
            y_mat = self.work_buffer(prefix + "y_mat", (out_channels, batch * out_h * out_w), y.dtype)
            np.matmul(w_mat, cols.T, out=y_mat)
            y_mat += bias[:, None]
            np.copyto(y.reshape(batch, out_channels, -1),
                      y_mat.reshape(out_channels, batch, -1).transpose(1, 0, 2))
        return {"algorithm": "im2col", "x_shape": x.shape, "cols": cols}

    def _weights_with_bias(self, dtype: np.dtype) -> np.ndarray:
        """C_in = 1: ``[W_mat | bias]`` ``[C_out, K + 1]``, to multiply patches that end in a row of ones."""
        weights = self.params["weights"].reshape(self.out_channels, -1)
        return np.concatenate([weights, self.params["bias"][:, None]], axis=1).astype(dtype, copy=False)

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
        old = self._work.get(name)
        fresh = old is None or old.shape != shape or old.dtype != dtype
        x_pad = self.work_buffer(name, shape, dtype)
        if fresh:
            x_pad.fill(0)
        x_pad[:, pad_h:pad_h + height, pad_w:pad_w + width, :] = x.transpose(0, 2, 3, 1)
        return x_pad

    def _im2col(self, x_pad: np.ndarray, out_h: int, out_w: int, prefix: str) -> np.ndarray:
        """The patches ``cols[(b, h, w), (i, j, c)] = x_pad[b, h*sH + i, w*sW + j, c]``, one copy from a window view.

        Returns ``[P, K]``, or for C_in = 1 the offset-major ``[K + 1, B, H_out*W_out]`` (whose copy
        moves whole image rows instead of single floats) with a last row of ones for the bias.
        """
        batch, _, _, channels = x_pad.shape
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        # windows[b, h, w, c, i, j] = x_pad[b, h*sH + i, w*sW + j, c]   (a view, no copy)
        windows = sliding_window_view(x_pad, (kh, kw), axis=(1, 2))[:, ::sh, ::sw][:, :out_h, :out_w]
        if channels == 1:
            name, shape = prefix + "cols", (kh * kw + 1, batch, out_h, out_w)
            old = self._work.get(name)
            cols_t = self.work_buffer(name, shape, x_pad.dtype)
            if old is None or old.shape != shape or old.dtype != x_pad.dtype:
                cols_t[-1] = 1                # the row of ones that carries the bias; never overwritten
            np.copyto(cols_t[:-1].reshape(kh, kw, batch, out_h, out_w), windows[:, :, :, 0].transpose(3, 4, 0, 1, 2))
            return cols_t.reshape(kh * kw + 1, batch, out_h * out_w)
        cols = self.work_buffer(prefix + "cols", (batch, out_h, out_w, kh, kw, channels), x_pad.dtype)
        np.copyto(cols, windows.transpose(0, 1, 2, 4, 5, 3))
        return cols.reshape(batch * out_h * out_w, -1)

    def _plan(self, height: int, width: int, dtype: np.dtype) -> FourierPlan:
        key = (height, width, np.dtype(dtype).str)
        if key not in self._plans:
            self._plans[key] = FourierPlan(height, width, self.kernel_size, self.padding, dtype)
        return self._plans[key]

    def _forward_fourier(self, x: np.ndarray, y: np.ndarray, prefix: str) -> dict[str, Any]:
        """Write the convolution of ``x`` into ``y`` through the convolution theorem (stride 1)."""
        batch, out_channels = y.shape[:2]
        plan = self._plan(x.shape[2], x.shape[3], y.dtype)
        buffer = self.work_buffer
        x_spec = plan.spectrum(x, plan.x_w, plan.x_h, buffer, prefix + "x_spec")          # X*  [F, B, C_in]
        kernel_spec = plan.kernel_spectrum(self.params["weights"])                        # Wf  [F, C_in, C_out]
        y_spec = buffer(prefix + "y_spec", (len(kernel_spec), batch, out_channels), plan.complex)
        np.matmul(x_spec, kernel_spec, out=y_spec)                                         # Y* = X* Wf
        # the bias is the zero-frequency term: (1 / (Lh Lw)) * bias * Lh * Lw at every position
        y_spec[0] += self.params["bias"] * (plan.len_h * plan.len_w)
        plan.inverse(y_spec, plan.y_h, plan.y_w, y, buffer, prefix + "y_inv")
        return {"algorithm": "fourier", "x_shape": x.shape, "plan": plan, "x_spec": x_spec,
                "kernel_spec": kernel_spec}

    # -- backward ---------------------------------------------------------------------------------
    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        if self._cache is None:
            raise RuntimeError("Conv2D.backward needs a forward(x, training=True) first")
        if self._cache["algorithm"] == "empty":
            for grad in self.grads.values():
                grad.fill(0)
            return None if not self.compute_input_grad else np.zeros(self._cache["x_shape"], grad_out.dtype)
        if self._cache["algorithm"] == "fourier":
            return self._backward_fourier(grad_out)
        return self._backward_im2col(grad_out)

    def _backward_im2col(self, grad_out: np.ndarray) -> np.ndarray | None:
        cols = self._cache["cols"]
        batch, out_channels, out_h, out_w = grad_out.shape
        dtype = grad_out.dtype
        kh, kw = self.kernel_size
        g_mat = None
        if cols.ndim == 3:
            # C_in = 1: [dL/dW_mat, dL/dbias] = sum_b grad_out[b] @ cols[:, b].T, one small product
            # per image (the row of ones in cols gives the bias gradient as the last column)
            per_image = self.work_buffer("grad_w_per_image", (batch, out_channels, cols.shape[0]), dtype)
            np.matmul(grad_out.reshape(batch, out_channels, -1), cols.transpose(1, 2, 0), out=per_image)
            grad_w_mat = self._bias_grad_from_total(per_image.sum(axis=0))
        else:
            # dL/dbias[o] = sum_{b, h, w} grad_out[b, o, h, w] (einsum: 2x faster than sum over axes)
            np.einsum("bos->o", grad_out.reshape(batch, out_channels, -1), out=self.grads["bias"])
            g_mat = self._channel_major(grad_out)
            grad_w_mat = self.work_buffer("grad_w_mat", (out_channels, cols.shape[1]), dtype)
            np.matmul(g_mat, cols, out=grad_w_mat)                          # dL/dW_mat = g_mat @ cols
        self._set_weight_grads(grad_w_mat)
        if not self.compute_input_grad:
            return None
        if g_mat is None:
            g_mat = self._channel_major(grad_out)
        return self._input_grad_im2col(g_mat, self._cache["x_shape"], out_h, out_w)

    def _bias_grad_from_total(self, total: np.ndarray) -> np.ndarray:
        """C_in = 1: store the last column of ``[dL/dW_mat, dL/dbias]`` as the bias gradient; return dL/dW_mat."""
        self.grads["bias"][...] = total[:, -1]
        return total[:, :-1]

    def _set_weight_grads(self, grad_w_mat: np.ndarray) -> None:
        """``grads["weights"][o, c, i, j] = grad_w_mat[o, (i, j, c)]``."""
        kh, kw = self.kernel_size
        np.copyto(self.grads["weights"],
                  grad_w_mat.reshape(self.out_channels, kh, kw, self.in_channels).transpose(0, 3, 1, 2))

    def _channel_major(self, grad_out: np.ndarray) -> np.ndarray:
        """``g_mat [C_out, P]``: ``g_mat[o, (b, h, w)] = grad_out[b, o, h, w]`` (moves runs of H_out*W_out)."""
        batch, out_channels = grad_out.shape[:2]
        g_mat = self.work_buffer("g_mat", (out_channels, batch, grad_out[0, 0].size), grad_out.dtype)
        np.copyto(g_mat, grad_out.reshape(batch, out_channels, -1).transpose(1, 0, 2))
        return g_mat.reshape(out_channels, -1)

    def _input_grad_im2col(self, g_mat: np.ndarray, x_shape: tuple[int, ...], out_h: int,
                           out_w: int) -> np.ndarray:
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

    def _backward_fourier(self, grad_out: np.ndarray) -> np.ndarray | None:
        """``G = DFT(g)``; ``DW* = X*^T G`` per frequency; ``DX = G Wf^T``; inverse transforms."""
        plan: FourierPlan = self._cache["plan"]
        x_spec, kernel_spec = self._cache["x_spec"], self._cache["kernel_spec"]
        buffer = self.work_buffer
        g_spec = plan.spectrum(grad_out, plan.g_w, plan.g_h, buffer, "g_spec")           # G [F, B, C_out]
        # frequency 0 of G is the sum of g over positions, so dL/dbias = sum_b G[0, b] (real)
        np.sum(g_spec[0].real, axis=0, out=self.grads["bias"])
        grad_w_spec = buffer("grad_w_spec", kernel_spec.shape, plan.complex)
        np.matmul(x_spec.transpose(0, 2, 1), g_spec, out=grad_w_spec)                      # conj(DW)
        np.copyto(self.grads["weights"], plan.kernel_from_spectrum(grad_w_spec, conjugated=True))
        if not self.compute_input_grad:
            return None
        grad_x_spec = buffer("grad_x_spec", x_spec.shape, plan.complex)
        np.matmul(g_spec, kernel_spec.transpose(0, 2, 1), out=grad_x_spec)                 # DX = G Wf^T
        grad_in = self.work_buffer("grad_in", self._cache["x_shape"], grad_out.dtype)
        return plan.inverse(grad_x_spec, plan.dx_h, plan.dx_w, grad_in, buffer, "grad_x_inv")

    # -- training together with the 2x2 max pooling after it ------------------------------------
    def pools_in_chunks(self, pool: Layer, x: np.ndarray) -> bool:
        """Whether :meth:`forward_pooled` can train this layer and ``pool``, the layer after it, on ``x``.

        It can for the first layer of the usual MNIST network: one input channel, im2col, no
        ``dL/dx``, followed by a MaxPool2D whose 2x2 fast path applies.
        """
        takes_fast_path = getattr(pool, "takes_fast_path", None)
        if takes_fast_path is None or self.in_channels != 1 or self.compute_input_grad:
            return False
        if x.ndim != 4 or x.shape[1] != 1 or len(x) == 0 or self.uses_fourier(len(x)):
            return False
        return takes_fast_path((len(x), self.out_channels, *self._output_hw(x.shape[2], x.shape[3])))

    def forward_pooled(self, x: np.ndarray, pool: Layer) -> np.ndarray:
        """``pool.forward(self.forward(x, True), True)``, the same numbers, a chunk of images at a time.

        Each chunk's convolution output (about ``CHUNK_BYTES`` of the pooling module) is pooled
        while it is still in the cache, so the batch-sized output of this layer, 12.8 MB for 32
        maps of 28x28 and 128 images, is never written to memory nor read back. Per CNN training
        step (with :meth:`backward_pooled`) this saves about 3 ms of the 19 the two layers took.
        """
        batch = len(x)
        out_h, out_w = self._output_hw(x.shape[2], x.shape[3])
        dtype = np.result_type(x, self.params["weights"])
        shape = (batch, self.out_channels, out_h, out_w)
        cols = self._im2col(self._padded_input(x, dtype, ""), out_h, out_w, "")         # [K + 1, B, P]
        w_bias = self._weights_with_bias(dtype)
        pooled = pool.start_fast_forward(shape, dtype)
        y_chunk = self.work_buffer("y_chunk", (pool.images_per_chunk(shape, dtype), *shape[1:]), dtype)
        for part in pool.fast_path_chunks(shape, dtype):
            patches = cols[:, part]
            y = y_chunk[:patches.shape[1]]
            np.matmul(w_bias, patches.transpose(1, 0, 2), out=y.reshape(len(y), self.out_channels, -1))
            pool.fast_forward_chunk(y, part, pooled)
        self._cache = {"algorithm": "im2col", "x_shape": x.shape, "cols": cols, "pooled_shape": shape}
        return pooled

    def backward_pooled(self, grad_pooled: np.ndarray, pool: Layer) -> None:
        """Backward of :meth:`forward_pooled`: fills the gradients of this layer (it has no ``dL/dx``).

        Chunk by chunk, the pooling routes ``grad_pooled`` to its inputs (this layer's outputs) and
        one product per image turns that into ``[dL/dW_mat, dL/dbias]``, as :meth:`backward` does.
        """
        cols, shape = self._cache["cols"], self._cache["pooled_shape"]
        dtype = grad_pooled.dtype
        per_image = self.work_buffer("grad_w_per_image", (shape[0], self.out_channels, cols.shape[0]), dtype)
        grad_chunk = self.work_buffer("grad_chunk", self._work["y_chunk"].shape, dtype)
        for part in pool.fast_path_chunks(shape, dtype):
            patches = cols[:, part]
            grad_y = grad_chunk[:patches.shape[1]]
            pool.fast_backward_chunk(grad_pooled, part, grad_y)
            np.matmul(grad_y.reshape(len(grad_y), self.out_channels, -1), patches.transpose(1, 2, 0),
                      out=per_image[part])
        self._set_weight_grads(self._bias_grad_from_total(per_image.sum(axis=0)))

    # -- description ------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"type": "Conv2D", "in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": pair_config(self.kernel_size), "stride": pair_config(self.stride),
                "padding": pair_config(self.padding), "init": self.init, "algorithm": self.algorithm}

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
