"""The fast twins of the activations: every pass in place, masks and derivatives in reused buffers.

The element-wise ones run on the model's workers, each thread on its own rows of the batch
(:meth:`~digitnet.kernels.parallel.Workers.each`: large arrays only).
"""

from __future__ import annotations

import numpy as np

from digitnet.kernels.buffers import Buffered
from digitnet.kernels.registry import kernel_for
from digitnet.nn.activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh


@kernel_for(ReLU)
class FastReLU(Buffered, ReLU):
    """:class:`~digitnet.nn.activations.ReLU` in place, with its masks and derivatives in reused buffers."""

    cached_attributes = ("y",)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        y = self.output_buffer("y", x.shape, x.dtype, training)
        self.workers.each(lambda rows: np.maximum(x[rows], 0, out=y[rows]), len(x), x.nbytes)
        self.y = y
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        # y > 0 exactly where x > 0, so the kept output gives the mask; multiplying by a boolean
        # array beats np.copyto(..., where=mask) and needs no new array.
        y, mask = self.y, self.work_buffer("mask", self.y.shape, np.dtype(bool))

        def rows_of(rows: slice) -> None:
            np.greater(y[rows], 0, out=mask[rows])
            np.multiply(grad_out[rows], mask[rows], out=grad_out[rows])

        self.workers.each(rows_of, len(y), y.nbytes)
        return grad_out


@kernel_for(LeakyReLU)
class FastLeakyReLU(Buffered, LeakyReLU):
    """:class:`~digitnet.nn.activations.LeakyReLU` in place, with its masks and derivatives in reused buffers."""

    cached_attributes = ("y",)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        y = self.output_buffer("y", x.shape, x.dtype, training)
        np.multiply(x, x.dtype.type(self.slope), out=y)
        np.maximum(x, y, out=y)
        self.y = y
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        # derivative = 1 + (slope - 1) * [y <= 0], built in a reused buffer
        derivative = self.work_buffer("derivative", self.y.shape, self.y.dtype)
        np.less_equal(self.y, 0, out=derivative)
        derivative *= derivative.dtype.type(self.slope - 1.0)
        derivative += 1
        grad_out *= derivative
        return grad_out


def stable_sigmoid_into(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = (1 + tanh(x / 2)) / 2``, the sigmoid of :func:`digitnet.nn.activations.stable_sigmoid`,
    computed in place (``out`` may be ``x``)."""
    np.multiply(x, x.dtype.type(0.5), out=out)
    np.tanh(out, out=out)
    out += 1
    out *= x.dtype.type(0.5)
    return out


@kernel_for(Sigmoid)
class FastSigmoid(Buffered, Sigmoid):
    """:class:`~digitnet.nn.activations.Sigmoid` in place, with its masks and derivatives in reused buffers."""

    cached_attributes = ("y",)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        y = self.output_buffer("y", x.shape, x.dtype, training)
        stable_sigmoid_into(x, y)
        self.y = y
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        y = self.y
        one_minus_y = self.work_buffer("one_minus_y", y.shape, y.dtype)
        np.subtract(1, y, out=one_minus_y)
        grad_out *= y
        grad_out *= one_minus_y
        return grad_out


@kernel_for(Tanh)
class FastTanh(Buffered, Tanh):
    """:class:`~digitnet.nn.activations.Tanh` in place, with its masks and derivatives in reused buffers."""

    cached_attributes = ("y",)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        y = self.output_buffer("y", x.shape, x.dtype, training)
        np.tanh(x, out=y)
        self.y = y
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        y = self.y
        derivative = self.work_buffer("derivative", y.shape, y.dtype)
        np.multiply(y, y, out=derivative)
        np.subtract(1, derivative, out=derivative)
        grad_out *= derivative
        return grad_out


@kernel_for(Softmax)
class FastSoftmax(Buffered, Softmax):
    """:class:`~digitnet.nn.activations.Softmax` in place, with its masks and derivatives in reused buffers."""

    cached_attributes = ("y",)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        y = self.output_buffer("y", x.shape, x.dtype, training)
        np.subtract(x, x.max(axis=-1, keepdims=True), out=y)
        np.exp(y, out=y)
        y /= y.sum(axis=-1, keepdims=True)
        self.y = y
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        y = self.y
        product = self.work_buffer("product", y.shape, y.dtype)
        np.multiply(grad_out, y, out=product)
        grad_out -= product.sum(axis=-1, keepdims=True)
        grad_out *= y
        return grad_out
