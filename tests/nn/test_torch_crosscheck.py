"""Cross-check against PyTorch: the same weights give the same outputs, loss and gradients, and the
optimizers take the same steps as torch.optim, for the reference classes and for their kernels.

Skips without torch on a user's machine; fails under DIGITNET_STRICT=1 (CI).
"""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.kernels import fast_twin, speed_up
from digitnet.nn import SGD, Adam, AdamW, Dense, MeanSquaredError, Sequential, SoftmaxCrossEntropy
from digitnet.nn.rmsprop import RMSprop
from tests.conftest import require_module

pytestmark = pytest.mark.torch

SIZES = [784, 64, 32, 10]
BATCH = 16

#: the reference objects themselves, or their kernels (sharing the same arrays)
MODELS = {"reference": lambda model: model, "fast": lambda model: speed_up(model)[0]}
TWINS = {"reference": lambda obj: obj, "fast": fast_twin}


@pytest.fixture(scope="module")
def torch():
    module = require_module("torch")
    module.set_num_threads(1)                     # deterministic and polite on a shared 2-core box
    return module


def torch_mlp(torch, model, activation):
    """A torch.nn.Sequential with our model's weights (torch stores Linear weights as [out, in])."""
    nn = torch.nn
    act = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
           "leaky_relu": lambda: nn.LeakyReLU(0.01), "gelu": lambda: nn.GELU(approximate="tanh")}[activation]
    modules = []
    for layer in model.layers:
        if isinstance(layer, Dense):
            linear = nn.Linear(layer.in_features, layer.out_features)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(layer.params["weights"].T.copy()))
                linear.bias.copy_(torch.from_numpy(layer.params["bias"].copy()))
            modules.append(linear)
        else:
            modules.append(act())
    return nn.Sequential(*modules)


def batch(seed=1):
    data_rng = np.random.default_rng(seed)
    x = data_rng.random((BATCH, SIZES[0]), dtype=np.float32)
    labels = data_rng.integers(0, 10, BATCH).astype(np.int64)
    return x, labels


def our_grads(model):
    return [grad for _, _, grad in model.named_parameters()]


def torch_grads(net):
    """Gradients in our layout: weights transposed to [in, out]."""
    grads = []
    for module in net:
        if hasattr(module, "weight"):
            grads += [module.weight.grad.T.numpy(), module.bias.grad.numpy()]
    return grads


@pytest.mark.parametrize("implementation", list(MODELS))
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid", "gelu"])
@pytest.mark.parametrize(("smoothing", "reduction"), [(0.0, "mean"), (0.1, "mean"), (0.1, "sum")])
def test_forward_loss_and_gradients_match_torch(torch, implementation, activation, smoothing, reduction):
    model = Sequential.from_spec(SIZES, activation, rng=np.random.default_rng(0))
    net = torch_mlp(torch, model, activation)
    model = MODELS[implementation](model)
    x, labels = batch()

    outputs = model.forward(x, training=True)
    loss_fn = TWINS[implementation](SoftmaxCrossEntropy(label_smoothing=smoothing, reduction=reduction))
    loss = loss_fn.forward(outputs, labels)
    model.backward(loss_fn.backward())

    torch_outputs = net(torch.from_numpy(x))
    torch_loss = torch.nn.functional.cross_entropy(torch_outputs, torch.from_numpy(labels),
                                                   label_smoothing=smoothing, reduction=reduction)
    torch_loss.backward()

    assert outputs.dtype == np.float32
    np.testing.assert_allclose(outputs, torch_outputs.detach().numpy(), rtol=1e-5, atol=1e-5)
    assert loss == pytest.approx(torch_loss.item(), rel=1e-5)
    scale = BATCH if reduction == "sum" else 1                          # gradients B times larger
    for ours, theirs in zip(our_grads(model), torch_grads(net), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("implementation", list(MODELS))
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_on_sigmoid_outputs_matches_torch(torch, implementation, reduction):
    model = Sequential.from_spec(SIZES, "sigmoid", output_activation="sigmoid", rng=np.random.default_rng(0))
    net = torch_mlp(torch, model, "sigmoid")
    model = MODELS[implementation](model)
    x, labels = batch(2)
    loss_fn = TWINS[implementation](MeanSquaredError(reduction))
    loss = loss_fn.forward(model.forward(x, training=True), labels)
    model.backward(loss_fn.backward())
    out = net(torch.from_numpy(x))
    onehot = torch.nn.functional.one_hot(torch.from_numpy(labels), 10).float()
    torch_loss = 0.5 * ((out - onehot) ** 2).sum()                      # our MSE: 1/2 sum of squares ...
    if reduction == "mean":
        torch_loss = torch_loss / BATCH                                  # ... over B for the mean
    torch_loss.backward()
    assert loss == pytest.approx(torch_loss.item(), rel=1e-5)
    scale = BATCH if reduction == "sum" else 1
    for ours, theirs in zip(our_grads(model), torch_grads(net), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7 * scale)


# -- optimizers -----------------------------------------------------------------------------------
OPTIMIZERS = {
    "sgd": (lambda: SGD(0.1, weight_decay=1e-3), lambda t, groups: t.optim.SGD(groups, lr=0.1)),
    "momentum": (lambda: SGD(0.1, momentum=0.9, weight_decay=1e-3),
                 lambda t, groups: t.optim.SGD(groups, lr=0.1, momentum=0.9)),
    "nesterov": (lambda: SGD(0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
                 lambda t, groups: t.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True)),
    "adam": (lambda: Adam(1e-2, weight_decay=1e-3), lambda t, groups: t.optim.Adam(groups, lr=1e-2)),
    "adamw": (lambda: AdamW(1e-2, weight_decay=0.1), lambda t, groups: t.optim.AdamW(groups, lr=1e-2)),
    "rmsprop": (lambda: RMSprop(1e-2, weight_decay=1e-3), lambda t, groups: t.optim.RMSprop(groups, lr=1e-2)),
    "rmsprop_alpha": (lambda: RMSprop(1e-3, alpha=0.9, eps=1e-6),
                      lambda t, groups: t.optim.RMSprop(groups, lr=1e-3, alpha=0.9, eps=1e-6)),
}


@pytest.mark.parametrize("implementation", list(TWINS))
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_steps_match_torch_optim(torch, implementation, name, monkeypatch):
    """Five steps on the same float32 parameters with the same gradients; decay on matrices only.
    The kernels' blocks are made small so that the (20, 8) matrix is updated in blocks."""
    import digitnet.kernels.optim as fast_optim

    monkeypatch.setattr(fast_optim, "BLOCK_SIZE", 16)
    make_ours, make_theirs = OPTIMIZERS[name]
    rng = np.random.default_rng(3)
    shapes = [(20, 8), (8,), (8, 3), (3,)]
    params = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
    grads = [np.zeros_like(p) for p in params]
    torch_params = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    ours = TWINS[implementation](make_ours())
    # our rule "decay only parameters with 2+ dims" is two parameter groups in torch
    groups = [{"params": [p for p in torch_params if p.ndim >= 2], "weight_decay": ours.weight_decay},
              {"params": [p for p in torch_params if p.ndim < 2], "weight_decay": 0.0}]
    theirs = make_theirs(torch, groups)
    for _ in range(5):
        for grad, torch_param in zip(grads, torch_params, strict=True):
            grad[...] = rng.standard_normal(grad.shape).astype(np.float32)
            torch_param.grad = torch.from_numpy(grad.copy())
        ours.step(list(zip(params, grads, strict=True)))
        theirs.step()
    for ours_param, torch_param in zip(params, torch_params, strict=True):
        assert ours_param.dtype == np.float32
        np.testing.assert_allclose(ours_param, torch_param.detach().numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("implementation", list(MODELS))
def test_three_training_steps_match_torch(torch, implementation):
    """Forward, loss, backward and a Nesterov step, three times over: the whole loop agrees."""
    model = Sequential.from_spec(SIZES, "relu", rng=np.random.default_rng(0))
    net = torch_mlp(torch, model, "relu")
    model, loss_fn, optimizer = (model, SoftmaxCrossEntropy(), SGD(0.05, momentum=0.9, nesterov=True))
    if implementation == "fast":
        model, loss_fn, optimizer = speed_up(model, loss_fn, optimizer)
    torch_optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    for step in range(3):
        x, labels = batch(10 + step)
        loss = loss_fn.forward(model.forward(x, training=True), labels)
        model.backward(loss_fn.backward())
        optimizer.step(model.parameters())
        torch_optimizer.zero_grad()
        torch_loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(labels))
        torch_loss.backward()
        torch_optimizer.step()
        assert loss == pytest.approx(torch_loss.item(), rel=1e-5)
    theirs = [p.detach().numpy() for p in net.parameters()]
    theirs = [p.T if p.ndim == 2 else p for p in theirs]
    for (_, ours, _), expected in zip(model.named_parameters(), theirs, strict=True):
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
