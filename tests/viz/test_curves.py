import numpy as np

from digitnet.training import History
from digitnet.viz import png_bytes, png_size, render
from digitnet.viz.curves import draw_curves
from tests.viz.support import assert_drawn, figure_texts, open_png


def test_curves_plot_the_history_numbers(source):
    history = source.history()
    fig = render("curves", source)
    image = open_png(png_bytes(fig, 50))
    assert image.size == png_size(fig, 50) == (500, 200)
    assert_drawn(image)
    loss_ax, acc_ax = fig.axes
    lines = {line.get_label().split(" (")[0]: line for line in loss_ax.get_lines()}
    np.testing.assert_allclose(lines["train"].get_ydata(), history.train_loss)
    np.testing.assert_allclose(lines["validation"].get_ydata(), history.val_loss)
    np.testing.assert_array_equal(lines["train"].get_xdata(), np.arange(1, len(history) + 1))
    acc_lines = {line.get_label().split(" (")[0]: line for line in acc_ax.get_lines()}
    np.testing.assert_allclose(acc_lines["validation"].get_ydata(), history.val_accuracy)
    assert f"train (final {history.train_loss[-1]:.4f})" in figure_texts(fig)


def test_curves_without_validation_and_with_one_epoch():
    history = History(epoch=[0], train_loss=[0.5], train_accuracy=[0.8], val_loss=[None], val_accuracy=[None],
                      lr=[0.1], seconds=[1.0])
    fig = draw_curves(history)
    assert [len(ax.get_lines()) for ax in fig.axes] == [1, 1]
    assert "Learning curves (1 epoch)" in figure_texts(fig)
