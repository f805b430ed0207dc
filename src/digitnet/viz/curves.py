"""Learning curves: loss and accuracy per epoch, on the training and the validation data."""

from __future__ import annotations

from digitnet.viz.style import TRAIN_COLOR, VAL_COLOR, drawing, new_figure


@drawing
def draw_curves(history):
    """Two panels (loss, accuracy) against the epoch from a :class:`~digitnet.training.History`.

    The training numbers are means over each epoch's batches (while the weights were changing);
    the validation numbers are measured after the epoch. The best validation epoch is marked.
    """
    epochs = [e + 1 for e in history.epoch]
    fig = new_figure(10, 4)
    loss_ax, acc_ax = fig.subplots(1, 2)
    has_val = any(v is not None for v in history.val_loss)
    marker = "o" if len(epochs) <= 30 else None
    for ax, train, val, what in ((loss_ax, history.train_loss, history.val_loss, "loss"),
                                 (acc_ax, history.train_accuracy, history.val_accuracy, "accuracy")):
        ax.plot(epochs, train, color=TRAIN_COLOR, marker=marker, ms=4, label=f"train (final {train[-1]:.4f})")
        if has_val:
            points = [(e, v) for e, v in zip(epochs, val, strict=True) if v is not None]
            ax.plot([p[0] for p in points], [p[1] for p in points], color=VAL_COLOR, marker=marker, ms=4,
                    label=f"validation (final {points[-1][1]:.4f})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.grid(True)
        ax.xaxis.get_major_locator().set_params(integer=True)
    loss_ax.set_title("Loss (lower is better)")
    acc_ax.set_title("Accuracy (higher is better)")
    if has_val:
        best = min(range(len(history.val_loss)), key=lambda i: history.val_loss[i]
                   if history.val_loss[i] is not None else float("inf"))
        loss_ax.axvline(epochs[best], color="0.6", ls="--", lw=1, label=f"best val loss: epoch {epochs[best]}")
    loss_ax.legend()
    acc_ax.legend(loc="lower right")
    if len(epochs) == 1:
        for ax in (loss_ax, acc_ax):
            ax.set_xlim(0.5, 1.5)
    fig.suptitle(f"Learning curves ({len(epochs)} epoch{'s' if len(epochs) != 1 else ''})")
    return fig
