import numpy as np

from digitnet.nn.sequential import Sequential
from digitnet.predict import describe_predictions, predict_proba_images, top_k


def test_predict_proba_images_scales_and_batches():
    model = Sequential.from_spec("784-8-10", rng=np.random.default_rng(0))
    images = np.random.default_rng(1).integers(0, 256, size=(7, 28, 28)).astype(np.uint8)
    probs = predict_proba_images(model, images, batch_size=3)
    expected = model.predict_proba(images.reshape(7, -1).astype(np.float32) / 255)
    assert probs.shape == (7, 10) and np.allclose(probs, expected, atol=1e-6)
    assert predict_proba_images(model, images[0]).shape == (1, 10)  # one image [28, 28]


def test_top_k_and_descriptions():
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], dtype=np.float32)
    tops = top_k(probs, ["a", "b", "c"], k=2)
    assert [t["class"] for t in tops[0]] == ["b", "c"] and [t["label"] for t in tops[1]] == [0, 2]
    rows = describe_predictions(probs, ["a", "b", "c"])
    assert rows[0]["label"] == 1 and rows[0]["class"] == "b" and abs(rows[0]["confidence"] - 0.6) < 1e-6
    assert len(rows[1]["top3"]) == 3
