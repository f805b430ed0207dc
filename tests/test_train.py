import io

import numpy as np
import pytest

from digitnet.data.dataset import Dataset
from digitnet.errors import ConfigError, DivergenceError, TrainingInterrupted
from digitnet.nn import SGD, Adam, SoftmaxCrossEntropy
from digitnet.nn.model import Sequential
from digitnet.nn.schedules import Schedule
from digitnet.train import Checkpoint, EarlyStopping, History, LambdaCallback, ProgressBar, Trainer, evaluate, fit


def blobs(n=600, seed=0):
    """Three well-separated classes of 28x28 uint8 'images': a bright square in a class-specific corner."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n).astype(np.uint8)
    images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for cls, (r, c) in enumerate([(2, 2), (2, 18), (18, 10)]):
        images[labels == cls, r:r + 8, c:c + 8] = 230
    return Dataset(images, labels, classes=["a", "b", "c"], name="blobs")


def small_model(seed=0, dropout=0.0):
    return Sequential.from_spec("784-16-3", dropout=dropout, rng=np.random.default_rng(seed))


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


def test_early_stopping_stops_and_restores_the_best_weights():
    data = blobs(200)
    val = blobs(100, seed=1)
    model = small_model()
    seen = []
    stopper = EarlyStopping(patience=2)

    # a learning rate that grows each epoch makes validation loss go up after a while
    def bump(t, epoch, logs):
        seen.append(logs["val_loss"])
        t.base_lr *= 30

    trainer = Trainer(model, SoftmaxCrossEntropy(), SGD(0.05), data, val, epochs=30, batch_size=20,
                      rng=np.random.default_rng(0), callbacks=[stopper, LambdaCallback(on_epoch_end=bump)],
                      log=lambda m: None)
    trainer.run()
    assert len(trainer.history) < 30
    assert stopper.best_loss == pytest.approx(min(seen))
    loss, _ = evaluate(model, SoftmaxCrossEntropy(), val)
    assert loss == pytest.approx(min(seen), rel=1e-5)


def test_early_stopping_without_validation_is_a_config_error():
    with pytest.raises(ConfigError, match="validation"):
        fit(small_model(), SoftmaxCrossEntropy(), SGD(0.1), blobs(50), epochs=2, batch_size=10,
            rng=np.random.default_rng(0), callbacks=[EarlyStopping()])


def test_checkpoint_callback_writes_every_n_epochs(tmp_path):
    from digitnet.io import load_model

    path = tmp_path / "c.safetensors"
    written = []

    class Spy(Checkpoint):
        def on_epoch_end(self, trainer, epoch, logs):
            before = path.exists() and path.stat().st_mtime_ns
            super().on_epoch_end(trainer, epoch, logs)
            written.append(path.exists() and path.stat().st_mtime_ns != before)

    fit(small_model(), SoftmaxCrossEntropy(), SGD(0.1), blobs(60), epochs=4, batch_size=30,
        rng=np.random.default_rng(0), callbacks=[Spy(path, every=2)])
    assert written == [False, True, False, True]
    assert load_model(path, what="checkpoint").metadata["checkpoint"]["epoch"] == 4


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


def test_history_round_trip(tmp_path):
    history = fit(small_model(), SoftmaxCrossEntropy(), SGD(0.1), blobs(60), blobs(30, 2), epochs=2,
                  batch_size=30, rng=np.random.default_rng(0))
    history.save(tmp_path / "h.json")
    assert History.load(tmp_path / "h.json") == history


def test_progress_off_a_tty_prints_one_line_per_epoch():
    stream = io.StringIO()
    fit(small_model(), SoftmaxCrossEntropy(), SGD(0.1), blobs(60), epochs=3, batch_size=30,
        rng=np.random.default_rng(0), callbacks=[ProgressBar(stream=stream, tty=False)])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("epoch 1/3: loss ")


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


def test_small_networks_train_with_one_blas_thread_large_ones_with_the_default():
    import os

    from digitnet.nn.conv import Conv2D
    from digitnet.nn.layers import Dense, Flatten
    from digitnet.nn.pooling import MaxPool2D
    from digitnet.train import SMALL_MATMUL_FLOPS, blas_threads_for, largest_matmul_flops

    small = Sequential.from_spec("784-128-64-10")
    assert largest_matmul_flops(small, 128) == 2 * 128 * 784 * 128          # x @ W of the first layer
    cnn = Sequential([Conv2D(1, 8, 3, padding=1), MaxPool2D(2), Flatten(), Dense(8 * 14 * 14, 10)],
                     input_shape=(1, 28, 28))
    assert largest_matmul_flops(cnn, 4) == max(2 * 4 * 8 * 9 * 28 * 28, 2 * 4 * 8 * 14 * 14 * 10)
    assert largest_matmul_flops(Sequential.from_spec("784-800-10"), 128) >= SMALL_MATMUL_FLOPS
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if "OPENBLAS_NUM_THREADS" in os.environ or "OMP_NUM_THREADS" in os.environ:
        pytest.skip("an explicit BLAS thread count in the environment wins")
    with blas_threads_for(small, 128):
        assert all(info["num_threads"] == 1 for info in threadpoolctl.threadpool_info()
                   if info["user_api"] == "blas")
    before = [info["num_threads"] for info in threadpoolctl.threadpool_info()]
    with blas_threads_for(Sequential.from_spec("784-800-10"), 128):
        assert [info["num_threads"] for info in threadpoolctl.threadpool_info()] == before
