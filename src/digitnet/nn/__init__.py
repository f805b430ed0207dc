"""The network core: layers, activations, losses, optimizers, schedules and gradient checks.

Everything here is NumPy and float32 in training; nothing here knows about files, the CLI or plots.
"""

from digitnet.nn.activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh, activation_layer, softmax
from digitnet.nn.base import LAYER_TYPES, Layer, layer_from_config, register_layer
from digitnet.nn.batchnorm import BatchNorm
from digitnet.nn.conv import Conv2D
from digitnet.nn.layers import Dense, Dropout, Flatten
from digitnet.nn.losses import Loss, MeanSquaredError, SoftmaxCrossEntropy, make_loss
from digitnet.nn.model import Sequential, parse_spec
from digitnet.nn.optim import SGD, Adam, AdamW, Optimizer, clip_grad_norm, make_optimizer
from digitnet.nn.pooling import AvgPool2D, MaxPool2D
from digitnet.nn.schedules import Schedule

__all__ = [
    "LAYER_TYPES", "SGD", "Adam", "AdamW", "AvgPool2D", "BatchNorm", "Conv2D", "MaxPool2D",
    "Dense", "Dropout", "Flatten", "Layer", "LeakyReLU", "Loss",
    "MeanSquaredError", "Optimizer", "ReLU", "Schedule", "Sequential", "Sigmoid", "Softmax",
    "SoftmaxCrossEntropy", "Tanh", "activation_layer", "clip_grad_norm", "layer_from_config",
    "make_loss", "make_optimizer", "parse_spec", "register_layer", "softmax",
]
