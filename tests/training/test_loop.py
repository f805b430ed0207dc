"""The training loop (digitnet.training.loop): learning, reproducibility, resume, divergence."""

import contextlib

import numpy as np
import pytest

from digitnet.errors import DivergenceError, TrainingInterrupted
from digitnet.nn import SGD, Adam, SoftmaxCrossEntropy
from digitnet.nn.schedules import Schedule
from digitnet.nn.sequential import Sequential
from digitnet.training import LambdaCallback, Trainer, evaluate, fit
from tests.training.support import blobs, small_model


def test_fit_learns_separable_data_and_loss_falls():
    data = blobs()
    model = small_model()
    history = fit(model, SoftmaxCrossEntropy(), SGD(0.1), data, data, epochs=5, batch_size=32,
                  rng=np.random.default_rng(0))
    assert len(history) == 5
    assert history.train_loss[-1] < history.train_loss[0] / 2
    assert history.val_accuracy[-1] > 0.98
    loss, acc = evaluate(model, SoftmaxCrossEntropy(), data)
    assert acc == pytest.approx(history.val_accuracy[-1])
    assert loss == pytest.approx(history.val_loss[-1])


def test_full_batch_takes_one_step_per_epoch():
    data = blobs(100)
    steps = []
    trainer = Trainer(small_model(), SoftmaxCrossEntropy(), SGD(0.1), data, epochs=3, batch_size=None,
                      rng=np.random.default_rng(0),
                      callbacks=[LambdaCallback(on_batch_end=lambda t, b, loss: steps.append(b))])
    trainer.run()
    assert trainer.batches_per_epoch == 1 and steps == [0, 0, 0]
    assert trainer.optimizer.steps == 3


def test_same_seed_gives_bit_identical_weights_and_history():
    def run():
        model = small_model(seed=4, dropout=0.2)
        history = fit(model, SoftmaxCrossEntropy(), Adam(1e-2), blobs(), epochs=2, batch_size=50,
                      rng=np.random.default_rng(9))
        return model.state_dict(), history

    (w1, h1), (w2, h2) = run(), run()
    assert all(np.array_equal(w1[k], w2[k]) for k in w1)
    assert h1.train_loss == h2.train_loss and h1.grad_norms == h2.grad_norms


def test_all_parameters_and_activations_stay_float32():
    model = small_model()
    fit(model, SoftmaxCrossEntropy(), SGD(0.1), blobs(100), epochs=1, batch_size=20, rng=np.random.default_rng(0))
    assert all(p.dtype == np.float32 and g.dtype == np.float32 for p, g in model.parameters())


def test_stop_mid_epoch_then_resume_is_bit_identical(tmp_path):
    data = blobs(300)

    def make(callbacks=()):
        model = small_model(seed=1, dropout=0.3)
        trainer = Trainer(model, SoftmaxCrossEntropy(), Adam(5e-3), data, epochs=3, batch_size=16,
                          rng=np.random.default_rng(5), schedule=Schedule("cosine", 5e-3, epochs=3),
                          callbacks=callbacks)
        trainer.checkpoint_path = tmp_path / "ckpt.safetensors"
        return model, trainer

    reference, trainer = make()
    trainer.run()

    def stop_in_epoch_two(t, batch, loss):
        if t.epoch == 1 and batch == 7:
            t.request_stop("test stop")

    _, interrupted = make([LambdaCallback(on_batch_end=stop_in_epoch_two)])
    with pytest.raises(TrainingInterrupted, match="resume with"):
        interrupted.run()
    resumed_model, resumed = make()
    resumed.restore_checkpoint(tmp_path / "ckpt.safetensors")
    assert (resumed.epoch, resumed.batch_index) == (1, 8)
    history = resumed.run()
    ref_state, new_state = reference.state_dict(), resumed_model.state_dict()
    assert all(np.array_equal(ref_state[k], new_state[k]) for k in ref_state)
    assert history.train_loss == trainer.history.train_loss


def test_nan_loss_raises_divergence_error_with_advice():
    data = blobs(100)
    with pytest.raises(DivergenceError, match="learning rate") as info:
        fit(small_model(), SoftmaxCrossEntropy(), SGD(1e12), data, epochs=3, batch_size=10,
            rng=np.random.default_rng(0))
    assert info.value.exit_code == 3


def test_grad_norms_are_recorded_per_parameter_and_positive():
    history = fit(small_model(), SoftmaxCrossEntropy(), SGD(0.1), blobs(200), epochs=2, batch_size=10,
                  rng=np.random.default_rng(0))
    assert set(history.grad_norms) == {"layers.0.weights", "layers.0.bias", "layers.2.weights", "layers.2.bias"}
    assert all(len(v) == 2 and all(x > 0 for x in v) for v in history.grad_norms.values())


def test_float_features_are_accepted_without_rescaling():
    data = blobs(200)
    features = data.images.reshape(200, -1).astype(np.float32) / 255
    model_a, model_b = small_model(), small_model()
    fit(model_a, SoftmaxCrossEntropy(), SGD(0.1), data, epochs=1, batch_size=20, rng=np.random.default_rng(0))
    fit(model_b, SoftmaxCrossEntropy(), SGD(0.1), (features, data.labels), epochs=1, batch_size=20,
        rng=np.random.default_rng(0))
    a, b = model_a.state_dict(), model_b.state_dict()
    assert all(np.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.slow
def test_real_mnist_subset_reaches_an_accuracy_floor(mnist_train, mnist_test):
    model = Sequential.from_spec("784-64-10", rng=np.random.default_rng(0))
    fit(model, SoftmaxCrossEntropy(), SGD(0.1, momentum=0.9), mnist_train.head(10000), epochs=3, batch_size=64,
        rng=np.random.default_rng(0))
    _, acc = evaluate(model, SoftmaxCrossEntropy(), mnist_test.head(2000))
    assert acc > 0.90


def test_gradients_are_fetched_after_every_backward():
    """A layer may hand back new gradient arrays in each backward: clipping, the recorded norms and
    the optimizer must all use those, never pairs kept from an earlier step."""
    def train(rebind: bool):
        model = small_model(seed=2)
        for layer in model.layers if rebind else []:
            if layer.params:
                def backward(grad_out, layer=layer, original=layer.backward):
                    grad_in = original(grad_out)
                    for key, grad in layer.grads.items():
                        layer.grads[key] = grad.copy()   # the arrays of the last step are stale now
                    return grad_in
                layer.backward = backward
        history = fit(model, SoftmaxCrossEntropy(), SGD(0.1, momentum=0.9), blobs(120), epochs=2, batch_size=20,
                      rng=np.random.default_rng(0), clip_norm=0.5)
        return model.state_dict(), history

    (w1, h1), (w2, h2) = train(rebind=False), train(rebind=True)
    assert all(np.array_equal(w1[k], w2[k]) for k in w1)
    assert h1.grad_norms == h2.grad_norms and h1.train_loss == h2.train_loss


def test_epoch_context_is_entered_around_every_epoch():
    events = []

    @contextlib.contextmanager
    def context():
        events.append("enter")
        yield
        events.append("exit")

    record = LambdaCallback(on_epoch_begin=lambda t, e: events.append(f"epoch {e}"),
                            on_epoch_end=lambda t, e, logs: events.append(f"end {e}"))
    fit(small_model(), SoftmaxCrossEntropy(), SGD(0.1), blobs(40), epochs=2, batch_size=20,
        rng=np.random.default_rng(0), callbacks=[record], epoch_context=context)
    assert events == ["enter", "epoch 0", "end 0", "exit", "enter", "epoch 1", "end 1", "exit"]



@pytest.mark.parametrize("loss_name", ["cross_entropy", "mse"])
def test_a_summed_loss_at_lr_trains_as_the_mean_at_lr_times_b_and_reports_per_image_losses(loss_name):
    """Issue 20: seed-004's project summed its gradients; SGD on the sum at lr equals the mean at lr * B.
    The history reports the mean per-image loss either way, so the curves are comparable."""
    from digitnet.nn import make_loss

    histories, weights = [], []
    for reduction, lr in (("mean", 0.05 * 32), ("sum", 0.05)):
        model = small_model(seed=3)
        history = fit(model, make_loss(loss_name, reduction=reduction), SGD(lr), blobs(256), blobs(64, seed=1),
                      epochs=2, batch_size=32, rng=np.random.default_rng(0))
        histories.append(history)
        weights.append(model.state_dict())
    for key in weights[0]:
        np.testing.assert_allclose(weights[1][key], weights[0][key], rtol=1e-4, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(histories[1].train_loss, histories[0].train_loss, rtol=1e-4)
    np.testing.assert_allclose(histories[1].val_loss, histories[0].val_loss, rtol=1e-4)
    assert histories[0].train_loss[-1] < histories[0].train_loss[0]
