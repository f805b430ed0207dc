"""MaxPool2D and AvgPool2D: shrink each channel of an NCHW batch by summarising small windows.

Shapes::

    x [B, C, H, W]  ->  y [B, C, H_out, W_out],   H_out = (H - kH) // sH + 1   (same for W)

with kernel ``k`` and stride ``s`` (default ``s = k``: windows side by side). A window that would
run past the edge is dropped, as in PyTorch (``ceil_mode=False``), so with H = 7 and k = s = 2 the
last row is unused and gets a zero gradient. Tuned versions are in :mod:`digitnet.kernels.pooling`.
"""

from __future__ import annotations

import numpy as np

from digitnet.errors import ConfigError
from digitnet.nn.base import Layer
from digitnet.nn.conv import output_size, pair_text, windows
from digitnet.nn.registry import Setting, register

POOL_SETTINGS = (Setting("kernel_size", "pair", 2, low=1, help="window size, k or (kH, kW)"),
                 Setting("stride", "pair", None, low=1, optional=True, help="step between windows (default: k)"))


class Pool2D(Layer):
    """Shared window bookkeeping of the two poolings."""

    def __init__(self, kernel_size: int | tuple[int, int] = 2, stride: int | tuple[int, int] | None = None) -> None:
        super().__init__()
        self.configure(kernel_size=kernel_size, stride=stride)
        self.stride = self.stride or self.kernel_size

    def output_hw(self, height: int, width: int) -> tuple[int, int]:
        out_h = output_size(height, self.kernel_size[0], self.stride[0], 0)
        out_w = output_size(width, self.kernel_size[1], self.stride[1], 0)
        if out_h < 1 or out_w < 1:
            raise ConfigError(f"{self.layer_type} window {pair_text(self.kernel_size)} does not fit "
                              f"a {height}x{width} input")
        return out_h, out_w

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3:
            raise ConfigError(f"{self.layer_type} expects inputs of shape (C, H, W) per sample, "
                              f"got {list(input_shape)}")
        return (input_shape[0], *self.output_hw(input_shape[1], input_shape[2]))

    def check_input(self, x: np.ndarray) -> tuple[int, int]:
        if x.ndim != 4:
            raise ConfigError(f"{self.layer_type} expects input [B, C, H, W], got {list(x.shape)}")
        return self.output_hw(x.shape[2], x.shape[3])

    def describe(self) -> str:
        text = pair_text(self.kernel_size)
        return text if self.stride == self.kernel_size else f"{text}, stride {pair_text(self.stride)}"


@register("layer", "MaxPool2D", formula="y[b,c,h,w] = max_{i,j} x[b,c,h*s+i,w*s+j]",
          gradient="grad_x[b,c,h*s+i,w*s+j] += grad_y[b,c,h,w] at the window's argmax (i, j), 0 elsewhere",
          settings=POOL_SETTINGS)
class MaxPool2D(Pool2D):
    """Maximum over each ``kH x kW`` window.

    Backward routes each window's gradient to the one input that was its maximum; the others get 0::

        dL/dx[b, c, h*sH + i, w*sW + j] += dL/dy[b, c, h, w]   where (i, j) is the argmax of window (h, w)

    Ties: the first maximum in row-major order within the window wins, as in PyTorch, so gradients
    agree even on constant regions (the zeros after a ReLU).
    """

    cached_attributes = ("argmax", "x_shape")

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        out_h, out_w = self.check_input(x)
        batch, channels = x.shape[:2]
        window_size = self.kernel_size[0] * self.kernel_size[1]
        flat = windows(x, self.kernel_size, self.stride, (out_h, out_w)).reshape(batch, channels, out_h, out_w,
                                                                                 window_size)
        self.argmax = flat.argmax(axis=-1)                       # [B, C, H_out, W_out]: the winner's offset
        self.x_shape = x.shape
        return np.take_along_axis(flat, self.argmax[..., None], axis=-1)[..., 0]

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self.argmax is None:
            raise RuntimeError("MaxPool2D.backward needs a forward(x, training=True) first")
        grad_in = np.zeros(self.x_shape, dtype=grad_out.dtype)
        b, c, h, w = np.indices(self.argmax.shape, sparse=True)
        i, j = np.divmod(self.argmax, self.kernel_size[1])      # the winner's row and column in its window
        np.add.at(grad_in, (b, c, h * self.stride[0] + i, w * self.stride[1] + j), grad_out)
        return grad_in


@register("layer", "AvgPool2D", formula="y[b,c,h,w] = mean_{i,j} x[b,c,h*s+i,w*s+j]",
          gradient="grad_x[b,c,h*s+i,w*s+j] += grad_y[b,c,h,w] / (kH*kW)", settings=POOL_SETTINGS)
class AvgPool2D(Pool2D):
    """Mean over each ``kH x kW`` window.

    Forward: ``y[b, c, h, w] = (1 / (kH*kW)) * sum_{i, j} x[b, c, h*s + i, w*s + j]``.
    Backward: every input of a window receives an equal share of its gradient::

        dL/dx[b, c, h*s + i, w*s + j] += dL/dy[b, c, h, w] / (kH*kW)
    """

    cached_attributes = ("x_shape",)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        out_hw = self.check_input(x)
        self.x_shape = x.shape
        return windows(x, self.kernel_size, self.stride, out_hw).mean(axis=(-2, -1), dtype=x.dtype)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        out_h, out_w = grad_out.shape[2:]
        share = grad_out / (kh * kw)
        grad_in = np.zeros(self.x_shape, dtype=grad_out.dtype)
        for i in range(kh):
            for j in range(kw):
                grad_in[:, :, i:i + sh * out_h:sh, j:j + sw * out_w:sw] += share
        return grad_in
