"""Conv2D: a 2-D convolution (cross-correlation, as in every deep-learning framework).

Shapes (NCHW, like PyTorch)::

    x        [B, C_in, H, W]
    weights  [C_out, C_in, kH, kW]
    bias     [C_out]
    y        [B, C_out, H_out, W_out],    H_out = (H + 2*pH - kH) // sH + 1  (same for W)

Forward, with ``x_pad`` the input with ``pH``/``pW`` zeros around each image::

    y[b, o, h, w] = bias[o] + sum_{c, i, j} weights[o, c, i, j] * x_pad[b, c, h*sH + i, w*sW + j]

**im2col** turns this into one matrix product. Each output pixel ``p = (b, h, w)`` sees a patch of
``K = C_in*kH*kW`` input values; copying every patch into a row of a matrix gives::

    cols[p, (c, i, j)] = x_pad[b, c, h*sH + i, w*sW + j]         cols [P, K],  P = B*H_out*W_out
    y_mat = cols @ weights.reshape(C_out, K).T + bias            y_mat [P, C_out]

Backward, given ``g = dL/dy`` as ``g_mat [P, C_out]`` (the same rows)::

    grad_weights = (g_mat.T @ cols).reshape(weights.shape)       every patch, weighted by its gradient
    grad_bias    = g_mat.sum(axis=0)
    grad_cols    = g_mat @ weights.reshape(C_out, K)             [P, K]
    col2im: each patch's gradient is added back where the patch came from:
        grad_x_pad[b, c, h*sH + i, w*sW + j] += grad_cols[p, (c, i, j)]

and ``grad_x`` is ``grad_x_pad`` without its border. Tuned versions (a channels-last layout, the
Fourier transform for 3x3 and larger kernels) are in :mod:`digitnet.kernels.conv`.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from digitnet.errors import ConfigError
from digitnet.nn.base import Layer
from digitnet.nn.init import init_weights
from digitnet.nn.registry import Setting, register


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length along one axis: ``(size + 2*padding - kernel) // stride + 1`` (0 if it does not fit).

    This is PyTorch's formula (``ceil_mode=False``): a window that would run past the (padded)
    edge is dropped, so trailing rows/columns may be unused.
    """
    span = size + 2 * padding - kernel
    return span // stride + 1 if span >= 0 else 0


def pair_text(pair: tuple[int, int]) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def windows(x_pad: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
            out_hw: tuple[int, int]) -> np.ndarray:
    """``[B, C, H_out, W_out, kH, kW]``: ``windows[b, c, h, w, i, j] = x_pad[b, c, h*sH + i, w*sW + j]``.

    A view of ``x_pad`` (nothing is copied): the window at each output position.
    """
    view = sliding_window_view(x_pad, kernel, axis=(2, 3))[:, :, ::stride[0], ::stride[1]]
    return view[:, :, :out_hw[0], :out_hw[1]]


@register(
    "layer", "Conv2D",
    formula="y[b,o,h,w] = bias[o] + sum_{c,i,j} weights[o,c,i,j] * x_pad[b,c,h*s+i,w*s+j]",
    gradient="grad_weights = g_mat.T @ cols;  grad_bias = sum g;  grad_x = col2im(g_mat @ W_mat)",
    settings=(Setting("in_channels", "int", low=1, help="C_in, channels of the input"),
              Setting("out_channels", "int", low=1, help="C_out, number of filters"),
              Setting("kernel_size", "pair", low=1, help="k or (kH, kW)"),
              Setting("stride", "pair", 1, low=1, help="step between windows"),
              Setting("padding", "pair", 0, low=0, help="zeros added on each side"),
              Setting("init", "str", "he", choices_of="initializer", help="how the weights are drawn"),
              Setting("algorithm", "str", "auto", choices=("auto", "im2col", "fourier", "winograd"),
                      help="the fast kernel's method (digitnet.kernels.conv); the reference is im2col")),
)
class Conv2D(Layer):
    """2-D convolution layer; see the module docstring for the math and the shapes.

    Args:
        in_channels: ``C_in`` (1 for MNIST images).  out_channels: ``C_out``, the number of filters.
        kernel_size, stride, padding: ``k`` or ``(kH, kW)``, and likewise.
        init: "he", "xavier" or "lecun", with ``fan_in = C_in*kH*kW`` and ``fan_out = C_out*kH*kW``
            (PyTorch's convention). The bias starts at 0.
        rng: generator for the initial weights.
        algorithm: which method the fast kernel uses (see :mod:`digitnet.kernels.conv`); the
            numbers agree up to float32 rounding, and this reference always uses im2col.
    """

    needs_rng = True
    cached_attributes = ("cols", "x_shape")

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0, init: str = "he",
                 rng: np.random.Generator | None = None, algorithm: str = "auto") -> None:
        super().__init__()
        self.configure(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size,
                       stride=stride, padding=padding, init=init, algorithm=algorithm)
        if self.algorithm in ("fourier", "winograd") and self.stride != (1, 1):
            raise ConfigError(f"the {self.algorithm} convolution algorithm needs stride 1")
        if self.algorithm == "winograd" and self.kernel_size != (3, 3):
            raise ConfigError("the winograd convolution algorithm needs a 3x3 kernel")
        kh, kw = self.kernel_size
        rng = rng if rng is not None else np.random.default_rng(0)
        shape = (self.out_channels, self.in_channels, kh, kw)
        fan_in, fan_out = self.in_channels * kh * kw, self.out_channels * kh * kw
        self.params = {"weights": init_weights(shape, fan_in, fan_out, self.init, rng),
                       "bias": np.zeros(self.out_channels, dtype=np.float32)}
        self.grads = {name: np.zeros_like(value) for name, value in self.params.items()}
        self.cols: np.ndarray | None = None
        self.x_shape: tuple[int, ...] | None = None

    def output_hw(self, height: int, width: int) -> tuple[int, int]:
        out_h = output_size(height, self.kernel_size[0], self.stride[0], self.padding[0])
        out_w = output_size(width, self.kernel_size[1], self.stride[1], self.padding[1])
        if out_h < 1 or out_w < 1:
            raise ConfigError(f"Conv2D kernel {pair_text(self.kernel_size)} with padding "
                              f"{pair_text(self.padding)} does not fit a {height}x{width} input")
        return out_h, out_w

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3 or input_shape[0] != self.in_channels:
            raise ConfigError(f"Conv2D expects inputs of shape ({self.in_channels}, H, W) per sample, "
                              f"got {list(input_shape)}")
        return (self.out_channels, *self.output_hw(input_shape[1], input_shape[2]))

    def check_input(self, x: np.ndarray) -> tuple[int, int]:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(f"Conv2D expects input [B, {self.in_channels}, H, W], got {list(x.shape)}")
        return self.output_hw(x.shape[2], x.shape[3])

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        out_h, out_w = self.check_input(x)
        batch = x.shape[0]
        (pad_h, pad_w) = self.padding
        x_pad = np.pad(x, ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w)))
        patches = windows(x_pad, self.kernel_size, self.stride, (out_h, out_w))   # [B, C, H_out, W_out, kH, kW]
        patch_size = self.in_channels * self.kernel_size[0] * self.kernel_size[1]      # K
        self.cols = patches.transpose(0, 2, 3, 1, 4, 5).reshape(batch * out_h * out_w, patch_size)
        self.x_shape = x.shape
        weights = self.params["weights"].reshape(self.out_channels, -1)
        y_mat = self.cols @ weights.T + self.params["bias"]                          # [P, C_out]
        return y_mat.reshape(batch, out_h, out_w, self.out_channels).transpose(0, 3, 1, 2)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self.cols is None:
            raise RuntimeError("Conv2D.backward needs a forward(x, training=True) first")
        batch, channels, height, width = self.x_shape
        (kh, kw), (sh, sw), (pad_h, pad_w) = self.kernel_size, self.stride, self.padding
        out_h, out_w = grad_out.shape[2:]
        g_mat = grad_out.transpose(0, 2, 3, 1).reshape(-1, self.out_channels)          # [P, C_out]
        weights = self.params["weights"]
        self.grads["weights"] = (g_mat.T @ self.cols).reshape(weights.shape)
        self.grads["bias"] = g_mat.sum(axis=0)
        grad_cols = g_mat @ weights.reshape(self.out_channels, -1)                      # [P, K]
        grad_patches = grad_cols.reshape(batch, out_h, out_w, channels, kh, kw)
        grad_pad = np.zeros((batch, channels, height + 2 * pad_h, width + 2 * pad_w), grad_out.dtype)
        for i in range(kh):          # col2im: every kernel offset adds its share where it came from
            for j in range(kw):
                grad_pad[:, :, i:i + sh * out_h:sh, j:j + sw * out_w:sw] += \
                    grad_patches[:, :, :, :, i, j].transpose(0, 3, 1, 2)
        return grad_pad[:, :, pad_h:pad_h + height, pad_w:pad_w + width]

    def describe(self) -> str:
        text = f"{self.in_channels}->{self.out_channels} k{pair_text(self.kernel_size)}"
        if self.stride != (1, 1):
            text += f" s{pair_text(self.stride)}"
        if self.padding != (0, 0):
            text += f" p{pair_text(self.padding)}"
        return f"{text} ({self.init})"
