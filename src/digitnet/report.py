"""report.html: every picture of a run, its metrics and its configuration, in one offline file.

The page is self-contained: each PNG is embedded as a base64 ``data:`` URI and the CSS is inline,
so it can be mailed, archived or opened without a network or the run directory. Pictures that
do not apply (CNN pictures for an MLP, learning curves for a bare model file) are listed with the
reason instead of being drawn.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import html
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from digitnet import __version__
from digitnet.errors import ConfigError, DigitnetError

#: Resolution of the embedded pictures (lower keeps the file small; 90 dpi reads well on screens).
REPORT_DPI = 90

#: What to look for in each picture (shown under it).
CAPTIONS = {
    "architecture": "The network's layers. Each column of an MLP is a layer of neurons (wide layers show "
                    "their first and last few); the lines between the shown neurons are their actual "
                    "weights after training, red for positive and blue for negative.",
    "curves": "Loss and accuracy after each epoch. Training numbers are averaged while the weights were "
              "still changing; validation numbers are measured on held-out images after the epoch. A "
              "validation curve that turns up while training keeps falling means overfitting.",
    "forward": "One test image flowing through the network: each layer's pre-activations z = xW + b "
               "(signed, blue-white-red), the activations after the non-linearity, the output scores and "
               "the softmax probabilities.",
    "grad-norms": "How large each parameter's gradient was, averaged per epoch (log scale). Gradients "
                  "shrink as the model fits; a layer whose gradient stays near 0 is not learning.",
    "grad-histograms": "The gradients dL/dW that backpropagation computes for one batch. Most are tiny; the "
                       "tails are the weights this batch pushes hardest.",
    "weight-change": "The first weight matrix at initialisation, after training, and the difference. The "
                     "stripes of the difference are image rows: pixels at the borders are always blank, so "
                     "their weights never receive a gradient and never change.",
    "weight-histograms": "The distribution of every weight matrix at the start and at the end of training.",
    "first-layer": "Each first-layer neuron's 784 incoming weights shown as a 28x28 image: red pixels "
                   "excite the neuron when they hold ink, blue pixels inhibit it.",
    "predictions": "Test images with the true label, the model's answer and its confidence; wrong answers "
                   "are red.",
    "mistakes": "The wrong answers the model was most sure of. Many are ambiguous even for people.",
    "confusion": "Rows are the true class, columns the predicted one. Off-diagonal cells show which classes "
                 "get mixed up; the right panel divides each row by its total (diagonal = recall).",
    "embedding": "Each dot is a test image placed by the first two principal components of the last hidden "
                 "layer's activations, coloured by its true class. Separate clusters mean the network has "
                 "learned features that tell the classes apart.",
    "robustness": "Test accuracy as the digits are damaged: Gaussian noise, rotation (both directions) and "
                  "thinner or thicker strokes. The strips show one digit at each level.",
    "coverage": "If the model may answer 'not sure' when its top probability is below a threshold, it "
                "answers fewer images but gets more of them right.",
    "filters": "The first convolution's learned kernels: each slides over the image and responds where the "
               "pattern (red) matches.",
    "feature-maps": "What one image looks like after each convolutional layer: every channel is one "
                    "filter's response map.",
}

CSS = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.55 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--ink);
       background: #fff; }
header { background: #24292f; color: #fff; padding: 28px 32px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p { margin: 0; color: #c9d1d9; }
main { max-width: 1240px; margin: 0 auto; padding: 8px 32px 48px; }
nav { background: var(--bg); border: 1px solid var(--line); border-radius: 8px; padding: 12px 18px; margin: 20px 0;
      display: flex; flex-wrap: wrap; gap: 4px 18px; }
nav a { color: var(--accent); text-decoration: none; white-space: nowrap; }
nav a:hover { text-decoration: underline; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 12px; margin: 20px 0; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; background: var(--bg); }
.card .value { font-size: 24px; font-weight: 600; }
.card .label { color: var(--muted); font-size: 13px; }
section { margin: 36px 0; }
h2 { border-bottom: 1px solid var(--line); padding-bottom: 6px; font-size: 21px; }
figure { margin: 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figcaption, .note { color: var(--muted); margin: 6px 0 0; max-width: 900px; }
code { background: var(--bg); padding: 1px 5px; border-radius: 4px; font-size: 13px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: right; }
th { background: var(--bg); }
td.left, th.left { text-align: left; }
tr.total td { font-weight: 600; }
.skipped li { color: var(--muted); }
footer { color: var(--muted); font-size: 13px; border-top: 1px solid var(--line); padding-top: 12px; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _img(png: bytes, alt: str, width: int, height: int) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<img src="data:image/png;base64,{data}" alt="{_esc(alt)}" width="{width}" height="{height}" '
            f'loading="eager">')


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = ["<table><tr><th class='left'>class</th><th>precision</th><th>recall</th><th>F1</th>"
            "<th>support</th></tr>"]
    for row in metrics["per_class"]:
        rows.append(f"<tr><td class='left'>{_esc(row['class'])}</td><td>{row['precision']:.4f}</td>"
                    f"<td>{row['recall']:.4f}</td><td>{row['f1']:.4f}</td><td>{row['support']:,}</td></tr>")
    macro = metrics["macro_avg"]
    rows.append(f"<tr class='total'><td class='left'>macro average</td><td>{macro['precision']:.4f}</td>"
                f"<td>{macro['recall']:.4f}</td><td>{macro['f1']:.4f}</td><td>{metrics['count']:,}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _history_table(history) -> str:
    head = ("<table><tr><th>epoch</th><th>train loss</th><th>train acc</th><th>val loss</th><th>val acc</th>"
            "<th>learning rate</th><th>seconds</th></tr>")

    def fmt(value, spec):
        return "&ndash;" if value is None else format(value, spec)

    rows = [head]
    for i in range(len(history)):
        rows.append(f"<tr><td>{history.epoch[i] + 1}</td><td>{fmt(history.train_loss[i], '.4f')}</td>"
                    f"<td>{fmt(history.train_accuracy[i], '.4f')}</td><td>{fmt(history.val_loss[i], '.4f')}</td>"
                    f"<td>{fmt(history.val_accuracy[i], '.4f')}</td><td>{fmt(history.lr[i], '.4g')}</td>"
                    f"<td>{fmt(history.seconds[i], '.2f')}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _config_table(config: dict[str, Any]) -> str:
    rows = ["<table><tr><th class='left'>setting</th><th class='left'>value</th></tr>"]
    for key, value in config.items():
        if value is None or value == "":
            continue
        text = json.dumps(value) if isinstance(value, dict | list) else str(value)
        rows.append(f"<tr><td class='left'><code>{_esc(key)}</code></td><td class='left'>{_esc(text)}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _card(value: str, label: str) -> str:
    return f"<div class='card'><div class='value'>{_esc(value)}</div><div class='label'>{_esc(label)}</div></div>"


def build_report(source, *, dpi: int = REPORT_DPI, options=None, counts: dict[str, int] | None = None,
                 kinds: list[str] | None = None, log: Callable[[str], None] | None = None) -> str:
    """The HTML text of the report for a :class:`digitnet.viz.PlotSource`.

    Every picture in :data:`digitnet.viz.KINDS` (or only those named in ``kinds``) that applies is
    drawn and embedded; the others are listed with the reason. ``counts`` overrides the ``count``
    option per picture (e.g. ``{"robustness": 500}``). ``log`` receives one line per picture.
    """
    from digitnet.analysis import evaluation_metrics
    from digitnet.viz import KINDS, PlotOptions, png_bytes, png_size, render

    options = options or PlotOptions()
    log = log or (lambda message: None)
    model = source.model
    data = source.test_data()
    metrics = evaluation_metrics(source.predictions(), source.classes)
    log(f"drawing the pictures of {source.name} on {len(data):,} {data.name} images ...")

    unknown = sorted(set(kinds or ()) - set(KINDS))
    if unknown:
        raise ConfigError(f"unknown picture(s) {', '.join(unknown)} (choose from {', '.join(KINDS)})")
    figures, skipped = [], []
    for name, kind in KINDS.items():
        if kinds is not None and name not in kinds:
            continue
        reason = kind.unavailable(source)
        if reason is None:
            try:
                kind_options = dataclasses.replace(options, count=(counts or {}).get(name, options.count))
                fig = render(name, source, kind_options)
            except DigitnetError as exc:
                reason = str(exc)
            else:
                png = png_bytes(fig, dpi)
                width, height = png_size(fig, dpi)
                figures.append((name, kind, _img(png, kind.title, width, height)))
                log(f"  {name}: {width}x{height}, {len(png) / 1024:.0f} KB")
                continue
        skipped.append((kind, reason))

    run_name = source.run_dir.name if source.run_dir is not None else source.loaded.path.name
    config = source.config
    cards = [_card(f"{metrics['accuracy']:.2%}", f"test accuracy ({metrics['count']:,} images)"),
             _card(f"{metrics['loss']:.4f}", "test loss (cross-entropy)"),
             _card(f"{model.num_params():,}", "parameters")]
    history = None
    try:
        history = source.history("the history table")
    except DigitnetError:
        pass
    if history is not None:
        cards.append(_card(str(len(history)), "epochs trained"))
        cards.append(_card(f"{sum(history.seconds):.1f} s", "training time"))
        val = [v for v in history.val_accuracy if v is not None]
        if val:
            cards.append(_card(f"{val[-1]:.2%}", "final validation accuracy"))

    nav = ["<a href='#metrics'>Metrics</a>"] + [f"<a href='#{name}'>{_esc(kind.title)}</a>"
                                                 for name, kind, _ in figures]
    nav += ["<a href='#history'>History</a>"] if history is not None else []
    nav += ["<a href='#config'>Configuration</a>"]
    confusion = metrics["confusion_matrix"]
    wrong = metrics["count"] - sum(confusion[i][i] for i in range(len(confusion)))
    generated = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>digitnet report: {_esc(run_name)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>digitnet report: {_esc(run_name)}</h1>",
        f"<p>{_esc(source.name)} &middot; test data {_esc(data.name)} &middot; "
        f"{len(model.layers)} layers, {model.num_params():,} parameters</p></header><main>",
        f"<div class='cards'>{''.join(cards)}</div>",
        f"<nav>{' '.join(nav)}</nav>",
        "<section id='metrics'><h2>Metrics on the test set</h2>",
        f"<p>Accuracy <b>{metrics['accuracy']:.4f}</b> ({wrong:,} wrong of {metrics['count']:,}), "
        f"mean cross-entropy loss <b>{metrics['loss']:.4f}</b>.</p>",
        _metrics_table(metrics),
        "<p class='note'>Precision: of the images predicted as the class, the fraction that are. Recall: of the "
        "images of the class, the fraction found. F1: their harmonic mean.</p></section>",
    ]
    for name, kind, image in figures:
        parts.append(f"<section id='{name}'><h2>{_esc(kind.title)}</h2><figure>{image}"
                     f"<figcaption>{_esc(CAPTIONS.get(name, kind.description))} "
                     f"Made by <code>digitnet plot {name} RUN_DIR</code>.</figcaption></figure></section>")
    if skipped:
        parts.append("<section id='skipped'><h2>Pictures not drawn</h2><ul class='skipped'>")
        parts += [f"<li><b>{_esc(kind.title)}</b> ({_esc(kind.name)}): {_esc(reason)}</li>" for kind, reason in skipped]
        parts.append("</ul></section>")
    if history is not None:
        parts.append(f"<section id='history'><h2>Training history</h2>{_history_table(history)}</section>")
    parts.append("<section id='config'><h2>Configuration</h2>")
    parts.append(_config_table(config) if config else "<p class='note'>No configuration recorded.</p>")
    parts.append("</section>")
    parts.append(f"<footer>Made by digitnet {_esc(__version__)} on {generated}. Every picture is embedded in "
                 f"this file; it needs no network and no other file.</footer></main></body></html>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------
# a sweep directory (written by `digitnet sweep`)
# ----------------------------------------------------------------------------------------------
SWEEP_CAPTION = ("Top: the test accuracy of every trial against each swept setting; a line joins the means over "
                 "seeds, a bar spans the lowest to the highest seed and a dot is one seed. Where bars of two "
                 "settings overlap, the difference may be the seed rather than the setting. Bottom: the learning "
                 "curves of every setting, the mean over seeds with a band from the lowest to the highest.")


def _rows_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "&ndash;"
        if isinstance(value, float):
            return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
        return _esc(value)

    head = "".join(f"<th class='left'>{_esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td class='left'>{cell(row.get(c))}</td>" for c in columns) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def build_sweep_report(sweep_dir: str | os.PathLike, *, dpi: int = REPORT_DPI) -> tuple[str, bytes]:
    """The HTML text of a sweep's report and its picture as PNG bytes."""
    from digitnet.sweep import group_rows, read_results, read_sweep
    from digitnet.viz import png_bytes, png_size
    from digitnet.viz.kinds import SWEEP_KINDS

    sweep_dir = Path(sweep_dir)
    info = read_sweep(sweep_dir)
    rows = read_results(sweep_dir)
    keys = list(info.get("keys") or [])
    fig = SWEEP_KINDS["sweep"].render(sweep_dir)
    png = png_bytes(fig, dpi)
    width, height = png_size(fig, dpi)
    groups = sorted(group_rows(rows, keys), key=lambda g: -g.mean if g.accuracies else float("inf"))
    ok = [r for r in rows if r.get("status") == "ok"]
    cards = [_card(f"{len(rows)} / {info.get('trial_count', len(rows))}", "trials finished"),
             _card(str(len(info.get("seeds") or [])), "seeds per setting")]
    if groups and groups[0].accuracies:
        cards.append(_card(f"{groups[0].mean:.2%}", f"best mean test accuracy: {groups[0].group}"))
    cards.append(_card(f"{sum(r.get('seconds') or 0 for r in rows):.0f} s", "trial time, summed over trials"))
    summary = [{"setting": g.group, "mean": g.mean if g.accuracies else None,
                "std": g.std if g.accuracies else None, "lowest": min(g.accuracies, default=None),
                "highest": max(g.accuracies, default=None), "seeds": len(g.accuracies), "diverged": g.failed}
               for g in groups]
    columns = ["trial", *keys, "seed", "status", "test_accuracy", "best_val_accuracy", "epochs_run", "seconds"]
    settings = {k: v for k, v in info.items() if k not in ("base",)}
    generated = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    commands = [r for r in ok if r.get("command")][:1]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>digitnet sweep: {_esc(sweep_dir.name)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>digitnet sweep: {_esc(sweep_dir.name)}</h1>",
        f"<p>{_esc(sweep_dir)} &middot; swept: {_esc(', '.join(keys) or 'seeds only')} &middot; "
        f"preset {_esc((info.get('base') or {}).get('preset') or 'custom')}</p></header><main>",
        f"<div class='cards'>{''.join(cards)}</div>",
        "<nav><a href='#picture'>Picture</a> <a href='#settings-summary'>Settings by accuracy</a> "
        "<a href='#trials'>Every trial</a> <a href='#sweep'>The sweep's settings</a></nav>",
        f"<section id='picture'><h2>Accuracy and learning curves</h2><figure>{_img(png, 'sweep', width, height)}"
        f"<figcaption>{_esc(SWEEP_CAPTION)}</figcaption></figure></section>",
        "<section id='settings-summary'><h2>Settings by mean test accuracy</h2>",
        _rows_table(summary, ["setting", "mean", "std", "lowest", "highest", "seeds", "diverged"]),
        "<p class='note'>std is the sample standard deviation over seeds. Every setting was trained on the same "
        "seeds, so a difference that holds seed by seed is more than chance.</p></section>",
        "<section id='trials'><h2>Every trial</h2>", _rows_table(rows, columns),
        "<p class='note'>Each trial is a run directory under <code>runs/</code> (<code>digitnet report "
        "SWEEP_DIR/runs/TRIAL</code> draws its own report). results.csv and results.json hold every column, "
        "with the command that trains a trial again bit for bit"
        + (f", e.g. <code>{_esc(commands[0]['command'])}</code>" if commands else "") + ".</p></section>",
        f"<section id='sweep'><h2>The sweep's settings</h2>{_config_table(settings)}"
        f"<h3>Every trial starts from</h3>{_config_table(info.get('base') or {})}</section>",
        f"<footer>Made by digitnet {_esc(__version__)} on {generated}. The picture is embedded in this file; "
        f"it needs no network and no other file.</footer></main></body></html>",
    ]
    return "\n".join(parts), png


def write_sweep_report(sweep_dir: str | os.PathLike, out: str | os.PathLike | None = None, *,
                       dpi: int = REPORT_DPI) -> tuple[Path, Path]:
    """Write ``SWEEP_DIR/report.html`` (or ``out``) and the picture beside it as ``sweep.png``; returns both."""
    from digitnet.atomic import WriteError, write_bytes, write_text

    out = Path(out) if out is not None else Path(sweep_dir) / "report.html"
    if not out.parent.is_dir():
        raise WriteError(f"cannot write {out}: directory {out.parent} does not exist")
    text, png = build_sweep_report(sweep_dir, dpi=dpi)
    picture = out.with_name("sweep.png") if out.name == "report.html" else out.with_suffix(".png")
    write_bytes(picture, png)
    write_text(out, text)
    return out, picture


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, dataset: str | None = None,
                 *, data_dir: str | None = None, dpi: int = REPORT_DPI, test=None, options=None,
                 counts: dict[str, int] | None = None, kinds: list[str] | None = None,
                 log: Callable[[str], None] | None = None) -> Path:
    """Write the HTML report of ``run_dir`` (a run directory or a model file) atomically; returns its path.

    A sweep directory (written by ``digitnet sweep``) gets :func:`write_sweep_report` instead.

    Args:
        run_dir: folder written by ``digitnet train --out`` (or a single .safetensors model file).
        out: where to write; default ``RUN_DIR/report.html`` (``<model>.report.html`` for a file).
        dataset: test data to use (default: the run's dataset).
        data_dir: folder holding the dataset files.
        dpi: resolution of the embedded pictures.
        test: a ready labelled test Dataset instead of loading one.
        options: :class:`digitnet.viz.PlotOptions` for the pictures (image index, seed).
        counts: per-picture ``count`` overrides, e.g. ``{"robustness": 500, "embedding": 1000}``.
        kinds: draw only these pictures (default: all of :data:`digitnet.viz.KINDS`).
        log: called with a line per picture (default: silent).
    """
    from digitnet.atomic import WriteError, write_text
    from digitnet.sweep import is_sweep_dir
    from digitnet.viz import PlotSource

    if is_sweep_dir(run_dir):
        return write_sweep_report(run_dir, out, dpi=dpi)[0]
    source = PlotSource.open(run_dir, dataset=dataset, data_dir=data_dir, test=test)
    if out is None:
        path = Path(run_dir)
        out = path / "report.html" if path.is_dir() else path.with_suffix(".report.html")
    folder = Path(out).parent
    if not folder.is_dir():  # say so now, not after drawing every picture
        raise WriteError(f"cannot write {out}: directory {folder} does not exist")
    text = build_report(source, dpi=dpi, options=options, counts=counts, kinds=kinds, log=log)
    write_text(out, text)
    return Path(out)
