"""FastSequential: the reference Sequential, with the steps a tuned model takes differently.

- Nobody needs ``dL/dx`` of the input images: every layer up to and including the first one with
  parameters skips it (``compute_input_grad = False``), and backward stops there.
- A convolution and the 2x2 max pooling after it train together, chunk by chunk, when the
  convolution is the first layer (one input channel, im2col) or runs by Fourier
  (:meth:`FastConv2D.forward_pooled <digitnet.kernels.conv.FastConv2D.forward_pooled>`): the same
  numbers (the first convolution's weight gradient to rounding: it sums the positions in another
  order) without a round trip of the convolution's output through memory. Backward then takes the
  same route. The convolution's own output is not stored whole, so read activations from an
  inference forward (``forward_all``).
"""

from __future__ import annotations

import numpy as np

from digitnet.kernels.conv import FastConv2D
from digitnet.kernels.parallel import SERIAL, Workers
from digitnet.nn.sequential import Sequential


class FastSequential(Sequential):
    """A :class:`~digitnet.nn.sequential.Sequential` of kernels (see the module docstring)."""

    def __init__(self, layers, input_shape=(784,), rng=None) -> None:
        super().__init__(layers, input_shape=input_shape, rng=rng)
        self.first_trained = next((i for i, layer in enumerate(self.layers) if layer.params), 0)
        for layer in self.layers[:self.first_trained + 1]:
            if hasattr(layer, "compute_input_grad"):
                layer.compute_input_grad = False
        self._pooled_in_chunks: set[int] = set()
        self.workers = SERIAL

    def use_workers(self, workers: Workers) -> None:
        """Run every kernel of this model on ``workers`` (see :mod:`digitnet.kernels.parallel`)."""
        self.workers = workers
        for layer in self.layers:
            if hasattr(layer, "workers"):
                layer.workers = workers

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._pooled_in_chunks = set()
        layers = self.layers
        index = 0
        while index < len(layers):
            layer = layers[index]
            after = layers[index + 1] if index + 1 < len(layers) else None
            if training and isinstance(layer, FastConv2D) and after is not None and layer.pools_in_chunks(after, x):
                x = layer.forward_pooled(x, after)
                self._pooled_in_chunks.add(index)
                index += 2
            else:
                x = layer.forward(x, training)
                index += 1
        return x

    __call__ = forward

    def backward(self, grad_out: np.ndarray) -> None:
        """Fills every layer's ``grads``; returns None (no gradient for the input images)."""
        grad = grad_out
        index = len(self.layers) - 1
        while index >= self.first_trained:
            if index - 1 in self._pooled_in_chunks:          # a convolution and its pooling, as in forward
                grad = self.layers[index - 1].backward_pooled(grad, self.layers[index])
                index -= 2
            else:
                grad = self.layers[index].backward(grad)
                index -= 1
        return None
