"""The kernel registry: each kernel subclasses the reference class it replaces and keeps its entry."""

from __future__ import annotations

import pytest

from digitnet.kernels import KERNELS
from digitnet.kernels.registry import kernel_for
from digitnet.nn import Dense, ReLU
from digitnet.nn.base import Layer
from digitnet.nn.registry import LAYER_TYPES, entry_of


@pytest.mark.parametrize("reference", list(KERNELS), ids=lambda cls: cls.__name__)
def test_every_kernel_subclasses_its_reference_and_keeps_its_registry_entry(reference):
    kernel = KERNELS[reference]
    assert issubclass(kernel, reference) and kernel is not reference
    assert entry_of(kernel) is entry_of(reference) is not None
    if issubclass(reference, Layer):
        assert kernel.layer_type == reference.layer_type == reference.__name__
        assert LAYER_TYPES[reference.__name__] is reference          # model files rebuild the reference


def test_the_usual_classes_have_kernels():
    names = {cls.__name__ for cls in KERNELS}
    assert {"Dense", "Dropout", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "BatchNorm", "Conv2D",
            "MaxPool2D", "AvgPool2D", "SoftmaxCrossEntropy", "SGD", "Adam", "AdamW"} <= names


def test_kernel_for_rejects_a_class_that_does_not_subclass_the_reference():
    with pytest.raises(TypeError, match="must subclass Dense"):
        @kernel_for(Dense)
        class NotDense(ReLU):
            pass
    assert KERNELS[Dense].__name__ == "FastDense"                 # the registry is unchanged


def test_kernel_for_registers_a_subclass():
    class Custom(Layer):
        pass

    try:
        @kernel_for(Custom)
        class FastCustom(Custom):
            pass

        assert KERNELS[Custom] is FastCustom
    finally:
        KERNELS.pop(Custom, None)
