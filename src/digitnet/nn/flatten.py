"""Flatten: feature maps ``[B, C, H, W]`` become vectors ``[B, C*H*W]`` for the Dense layers after them."""

from __future__ import annotations

import math

import numpy as np

from digitnet.nn.base import Layer
from digitnet.nn.registry import register


@register("layer", "Flatten", formula="y = x.reshape(B, -1)", gradient="grad_x = grad_y.reshape(x.shape)")
class Flatten(Layer):
    """Reshape ``[B, d1, d2, ...]`` to ``[B, d1*d2*...]``; backward reshapes the gradient back."""

    cached_attributes = ("input_shape",)

    def __init__(self) -> None:
        super().__init__()
        self.input_shape: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self.input_shape = x.shape
        # the explicit size (not -1) also works for an empty batch
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out.reshape(self.input_shape)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(input_shape),)
