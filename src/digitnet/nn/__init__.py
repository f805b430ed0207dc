"""The textbook: layers, activations, losses, optimizers, schedules, initialisers and gradient checks.

Each file holds one idea and reads as its formula; everything here is plain NumPy and knows
nothing of files, the command line or plots. Every named thing is registered once in
:mod:`digitnet.nn.registry`. The tuned twins used for training live in :mod:`digitnet.kernels`.
A class added in a new file here (say ``digitnet/nn/gelu.py``) is reachable as ``digitnet.nn.GELU``.
"""

from digitnet.nn.activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh, activation_layer, softmax
from digitnet.nn.adam import Adam, AdamW
from digitnet.nn.base import LAYER_TYPES, Layer, layer_from_config, register_layer
from digitnet.nn.batchnorm import BatchNorm
from digitnet.nn.clipping import clip_grad_norm
from digitnet.nn.conv import Conv2D
from digitnet.nn.dense import Dense
from digitnet.nn.dropout import Dropout
from digitnet.nn.flatten import Flatten
from digitnet.nn.losses import Loss, MeanSquaredError, SoftmaxCrossEntropy, make_loss
from digitnet.nn.optim import SGD, Optimizer, make_optimizer
from digitnet.nn.pooling import AvgPool2D, MaxPool2D
from digitnet.nn.schedules import Schedule
from digitnet.nn.sequential import Sequential, parse_spec

__all__ = [
    "LAYER_TYPES", "SGD", "Adam", "AdamW", "AvgPool2D", "BatchNorm", "Conv2D", "MaxPool2D",
    "Dense", "Dropout", "Flatten", "Layer", "LeakyReLU", "Loss",
    "MeanSquaredError", "Optimizer", "ReLU", "Schedule", "Sequential", "Sigmoid", "Softmax",
    "SoftmaxCrossEntropy", "Tanh", "activation_layer", "clip_grad_norm", "layer_from_config",
    "make_loss", "make_optimizer", "parse_spec", "register_layer", "softmax",
]


def __getattr__(name: str):
    """Any registered class by its class name (``digitnet.nn.GELU``, ``digitnet.nn.RMSprop``)."""
    from digitnet.nn.registry import KINDS, entries

    for kind in KINDS:
        for found in entries(kind):
            if getattr(found.target, "__name__", None) == name:
                return found.target
    raise AttributeError(f"module 'digitnet.nn' has no attribute {name!r}")
