"""The Keras-style summary and the layer names."""

from __future__ import annotations

from digitnet.nn import Dense, Flatten, LeakyReLU, Sequential, Softmax
from digitnet.nn.batchnorm import BatchNorm
from digitnet.nn.conv import Conv2D
from digitnet.nn.pooling import MaxPool2D
from digitnet.nn.summary import _snake_case, layer_names


def test_summary_reads_like_keras_with_the_right_numbers():
    text = Sequential.from_spec("784-128-64-10", dropout=0.2).summary()
    lines = text.splitlines()
    assert lines[0].split() == ["Layer", "Type", "Output", "shape", "Params"]
    assert lines[3].split() == ["dense_0", "Dense", "784->128", "(he)", "[None,", "128]", "100,480"]  # 784*128+128
    assert lines[4].split() == ["relu_0", "ReLU", "[None,", "128]", "0"]
    assert lines[5].split() == ["dropout_0", "Dropout", "rate", "0.2", "[None,", "128]", "0"]
    assert lines[6].split()[-1] == "8,256"                                  # 128*64+64
    assert lines[9].split()[:4] == ["dense_2", "Dense", "64->10", "(he)"]
    assert lines[9].split()[-1] == "650"                                    # 64*10+10
    assert "Total params: 109,386" in lines
    assert "Trainable params: 109,386" in lines
    assert "Non-trainable params: 0" in lines
    assert lines[-1] == "Output: logits [None, 10]"
    assert "in_features=" not in text


def test_summary_counts_batchnorm_statistics_as_non_trainable():
    model = Sequential([Conv2D(1, 4, 3, padding=1), BatchNorm(4), MaxPool2D(2), Flatten(), Dense(64, 10), Softmax()],
                       input_shape=(1, 8, 8))
    lines = model.summary().splitlines()
    assert "Trainable params: 698" in lines                    # 4*9+4 + 4+4 + 64*10+10
    assert "Non-trainable params: 8" in lines                  # running mean and variance of 4 channels
    assert "Total params: 706" in lines
    assert lines[-1] == "Output: softmax [None, 10]"
    assert lines[3].split()[:4] == ["conv2d_0", "Conv2D", "1->4", "k3"]
    assert lines[4].split()[0] == "batch_norm_0" and lines[4].split()[-1] == "16"   # 8 params + 8 statistics


def test_layer_names_are_numbered_per_type():
    model = Sequential([Flatten(), Dense(4, 3), LeakyReLU(), Dense(3, 2), Softmax()], input_shape=(2, 2))
    assert model.layer_names() == ["flatten_0", "dense_0", "leaky_relu_0", "dense_1", "softmax_0"]
    assert layer_names(model.layers) == model.layer_names()


def test_snake_case_of_class_names():
    assert _snake_case("LeakyReLU") == "leaky_relu"
    assert _snake_case("MaxPool2D") == "max_pool2d"
    assert _snake_case("GELU") == "gelu"
    assert _snake_case("BatchNorm") == "batch_norm"
