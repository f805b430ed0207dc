"""Callbacks (digitnet.training.callbacks): early stopping, checkpoints every N epochs, hooks."""

import numpy as np
import pytest

from digitnet.errors import ConfigError
from digitnet.nn import SGD, SoftmaxCrossEntropy
from digitnet.training import Checkpoint, EarlyStopping, LambdaCallback, Trainer, evaluate, fit
from tests.training.support import blobs, small_model


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


def test_lambda_callback_refuses_an_unknown_hook():
    with pytest.raises(ConfigError, match="unknown callback hook 'on_step'"):
        LambdaCallback(on_step=lambda *args: None)
