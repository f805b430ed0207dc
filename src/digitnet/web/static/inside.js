// digitnet Inside tab: plain JavaScript, no build step, no external requests.
// One image (the drawing, a test image or a file) through the network, step by step: POST /api/explain
// answers with every layer's formula, shapes and values, the loss for a true label, every gradient of
// the backward pass and one SGD step, with the lines `digitnet explain` prints. This file only draws it.
// While this tab is shown, the Draw tab's canvas lives here, so drawing updates the view (debounced,
// one request at a time, the latest drawing wins); the Draw tab's own predictions are not held up.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const DEBOUNCE_MS = 250;
  const DIVERGING = [[49, 54, 149], [116, 173, 209], [247, 247, 247], [244, 109, 67], [165, 0, 38]];
  const SEQUENTIAL = [[15, 23, 42], [79, 70, 229], [251, 191, 36]];
  const panel = document.querySelector('[data-panel="inside"]');

  let result = null, unit = null, upload = null, classes = [];
  let inFlight = false, pending = false, timer = null, stale = true, requests = 0;

  // ---- colours: the same scales as the pictures the server draws -------------------------------
  function colour(value, scale, signed) {
    if (value === null || !Number.isFinite(value)) return "rgb(200,200,200)";
    const stops = signed ? DIVERGING : SEQUENTIAL;
    let t = value / (scale || 1);
    t = signed ? (Math.max(-1, Math.min(1, t)) + 1) / 2 : Math.max(0, Math.min(1, t));
    const x = t * (stops.length - 1), i = Math.min(Math.floor(x), stops.length - 2), f = x - i;
    return "rgb(" + stops[i].map((v, k) => Math.round(v + f * (stops[i + 1][k] - v))).join(",") + ")";
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  // a line of digitnet explain's text, spaces kept
  function line(text, className) { return element("code", "line" + (className ? " " + className : ""), text); }

  // ---- arrays: cells (short vectors) or the server's picture (images, maps, kernels) ------------
  // unitLayer: clicking a cell or a tile shows that unit (a Dense column, a convolution's filter)
  function view(tensor, unitLayer, label) {
    if (!tensor) return element("span");
    const box = element("div", "view");
    if (tensor.picture) box.appendChild(picture(tensor.picture, unitLayer, label));
    else if (tensor.values) box.appendChild(cells(tensor, unitLayer, label));
    return box;
  }

  function cells(tensor, unitLayer, label) {
    const box = element("div", "cells" + (tensor.values.length > 128 ? " many" : ""));
    box.setAttribute("role", "img");
    box.setAttribute("aria-label", (label || "values") + ": " + tensor.values.length + " cells");
    const clickable = unitLayer !== null && unitLayer !== undefined;
    tensor.values.forEach((value, k) => {
      const cell = element("span");
      cell.style.background = colour(value, tensor.scale, tensor.signed);
      cell.title = "[" + k + "] " + (value === null ? "not a number" : Number(value.toPrecision(4)));
      if (clickable) { cell.dataset.unit = String(k); cell.classList.add("pick"); }
      box.appendChild(cell);
    });
    if (clickable) {
      box.addEventListener("click", (event) => {
        const k = event.target.dataset && event.target.dataset.unit;
        if (k !== undefined) pickUnit(unitLayer, Number(k));
      });
    }
    return box;
  }

  function picture(shown, unitLayer, label) {
    const figure = element("div", "picture");
    const image = element("img");
    image.src = shown.src;
    image.alt = (label || "values") + " (" + (shown.note || "picture") + ")";
    const fit = 320 / Math.max(shown.width, shown.height / 2);     // about 320 px wide at most
    const zoom = fit >= 2 ? Math.min(8, Math.floor(fit)) : Math.min(fit, 1.5);
    image.style.width = Math.round(shown.width * zoom) + "px";
    if (!shown.tiles && shown.height * zoom < 60) {      // a few long rows (a weight matrix): taller rows
      image.style.width = "100%";
      image.style.maxWidth = Math.round(shown.width * zoom) + "px";
      image.style.height = Math.min(8 * shown.height, 80) + "px";
    }
    figure.appendChild(image);
    if (shown.note) figure.appendChild(element("span", "note", shown.note));
    const tiles = shown.tiles;
    if (tiles) {
      const tileAt = (event) => {
        const box = image.getBoundingClientRect();
        const x = (event.clientX - box.left) * shown.width / box.width;
        const y = (event.clientY - box.top) * shown.height / box.height;
        const column = Math.floor(x / (tiles.width + 1)), row = Math.floor(y / (tiles.height + 1));
        const k = row * tiles.columns + column;
        return column < tiles.columns && k < tiles.count ? k : -1;
      };
      image.addEventListener("mousemove", (event) => {
        const k = tileAt(event);
        image.title = k >= 0 ? tiles.labels[k] : "";
      });
      // a tile is a unit: channel k of a feature map, or the unit the picture says (weights of some units)
      const layer = shown.units ? shown.layer : unitLayer;
      if (layer !== null && layer !== undefined) {
        image.classList.add("pick");
        image.addEventListener("click", (event) => {
          const k = tileAt(event);
          if (k >= 0) pickUnit(layer, shown.units ? shown.units[k] : k);
        });
      }
    }
    return figure;
  }

  // ---- the steps ------------------------------------------------------------------------------
  function forwardStep(step) {
    const card = element("section", "step");
    card.dataset.step = "forward-" + step.index;
    card.appendChild(element("h3", null, "layer " + step.index + " · " + step.name + " · " +
      (step.kind + " " + step.description).trim()));
    card.appendChild(line(step.text.formula, "formula"));
    card.appendChild(line(step.text.shapes, "shapes"));
    step.text.params.forEach((text, k) => {
      card.appendChild(line(text, "param"));
      const param = step.params[Object.keys(step.params)[k]];
      if (param && param.picture) card.appendChild(picture(param.picture, null, "kernels"));
    });
    card.appendChild(view(step.output, step.unit_layer, step.symbol));
    card.appendChild(line(step.text.preview, "preview"));
    card.appendChild(line(step.text.stats, "stats"));
    if (step.text.sentence) card.appendChild(element("p", "sentence", step.text.sentence));
    return card;
  }

  function outputCards(data) {
    const box = document.createDocumentFragment();
    const output = element("section", "step");
    output.dataset.step = "output";
    output.appendChild(line(data.output.text.formula, "formula"));
    const bars = element("ol", "bars inside-bars");
    bars.setAttribute("aria-label", "probability of each class");
    data.probabilities.forEach((p, k) => {
      const item = element("li");
      item.classList.toggle("top", k === data.predicted);
      item.classList.toggle("truth", k === data.label && data.label_given);
      item.appendChild(element("span", "name", data.classes[k]));
      const track = element("span", "track"), fill = element("span", "fill");
      fill.style.width = (100 * p).toFixed(1) + "%";
      track.appendChild(fill);
      item.appendChild(track);
      item.appendChild(element("span", "pct", (100 * p).toFixed(2) + "%"));
      const marks = [];
      if (k === data.predicted) marks.push("predicted");
      if (k === data.label && data.label_given) marks.push("true label");
      item.appendChild(element("span", "mark", marks.join(", ")));
      bars.appendChild(item);
    });
    output.appendChild(bars);
    box.appendChild(output);

    const loss = element("section", "step");
    loss.dataset.step = "loss";
    const given = data.label_given ? "" : " (none given: the predicted class)";
    loss.appendChild(element("h3", null, "Loss for the label " + data.classes[data.label] + given));
    loss.appendChild(line(data.loss.text.formula, "formula"));
    loss.appendChild(line(data.loss.text.settings, "settings"));
    loss.appendChild(line(data.loss.text.value, "big"));
    box.appendChild(loss);
    return box;
  }

  function lossGradient(data) {
    const card = element("section", "step");
    card.dataset.step = "loss-gradient";
    card.appendChild(element("h3", null, "The gradient of the loss"));
    card.appendChild(line(data.loss.text.grad_formula, "formula"));
    card.appendChild(view(data.loss.grad, null, "grad"));
    card.appendChild(line(data.loss.text.grad, "preview"));
    return card;
  }

  function backwardStep(step) {
    const card = element("section", "step");
    card.dataset.step = "backward-" + step.index;
    card.appendChild(element("h3", null, "layer " + step.index + " · " + step.name + " · " + step.kind));
    step.gradients.forEach((gradient) => {
      card.appendChild(line(gradient.line, "formula"));
      const tensor = gradient.tensor;
      if (!tensor) return;
      if (tensor.units) {
        const units = element("div", "units");
        units.appendChild(element("span", "note", "each unit's share: the norm of its incoming weights' gradient"));
        units.appendChild(cells(tensor.units, tensor.units.layer, "gradient size per unit"));
        card.appendChild(units);
      }
      card.appendChild(view(tensor, tensor.unit_layer, "grad_" + gradient.of));
    });
    step.text.notes.forEach((note) => card.appendChild(element("p", "sentence", note)));
    return card;
  }

  function stepCard(data) {
    const u = data.update;
    const card = element("section", "step");
    card.dataset.step = "update";
    card.appendChild(line(u.text.formula, "formula"));
    card.appendChild(line(u.text.settings, "settings"));
    u.text.params.forEach((text) => card.appendChild(line(text, "param")));
    card.appendChild(line(u.text.result, "big"));
    const after = data.classes[u.predicted_after];
    card.appendChild(element("p", "comment",
      u.loss_after < u.loss_before
        ? "One step against the gradient makes the label " + data.classes[data.label] + " more likely for this image" +
          (u.predicted_after !== u.predicted_before ? " and changes the prediction to " + after : "") + "."
        : "This step overshoots: the loss goes up. Try a smaller learning rate."));
    card.appendChild(element("p", "note", u.text.note));
    return card;
  }

  function showUnit(data) {
    const u = data.unit;
    const layers = $("inside-unit-layer");
    const key = data.unit_layers.map((l) => l.layer + ":" + l.units).join(",");
    if (layers.dataset.key !== key) {
      layers.textContent = "";
      data.unit_layers.forEach((l) => layers.appendChild(new Option(
        "layer " + l.layer + " · " + l.name + " (" + l.symbol + ", " + l.units + ")", String(l.layer))));
      layers.dataset.key = key;
    }
    ["inside-unit-weights", "inside-unit-grad"].forEach((id) => { $(id).textContent = ""; });
    if (!u) { $("inside-unit-what").textContent = "This network has no layer with incoming weights."; return; }
    // (not while the user is choosing: an answer arriving meanwhile must not undo what they typed)
    if (document.activeElement !== layers) layers.value = String(u.layer);
    $("inside-unit-index").max = u.units - 1;
    if (document.activeElement !== $("inside-unit-index")) $("inside-unit-index").value = u.index;
    $("inside-unit-what").textContent = u.what;
    $("inside-unit-weights").appendChild(view(u.weights, null, "incoming weights"));
    $("inside-unit-grad").appendChild(view(u.grad, null, "their gradient"));
    const numbers = ["|weights| " + u.weights.norm.toFixed(4), "|grad| " + u.grad.norm.toFixed(4)];
    if (u.bias !== null) numbers.push("bias " + u.bias.toFixed(4) + ", grad_bias " + u.grad_bias.toFixed(4));
    if (u.output !== null) numbers.push((u.kind === "Conv2D" ? "mean of " : "") + u.symbol + "[" + u.index + "] = " +
      u.output.toFixed(4));
    $("inside-unit-numbers").textContent = numbers.join(" · ") + ". " + u.step;
  }

  // the 28x28 digit the network sees, white ink on black as in MNIST (and on the Draw tab)
  function showInput(image) {
    const canvas = $("inside-input");
    const context = canvas.getContext("2d");
    const pixels = context.createImageData(28, 28);
    image.forEach((row, r) => row.forEach((v, c) => {
      const i = 4 * (28 * r + c);
      pixels.data[i] = pixels.data[i + 1] = pixels.data[i + 2] = v;
      pixels.data[i + 3] = 255;
    }));
    context.putImageData(pixels, 0, 0);
    canvas.hidden = false;
  }

  function render(data) {
    result = data;
    showInput(data.image);
    $("inside-input-text").textContent = data.input.text;
    const forward = $("inside-forward");
    forward.textContent = "";
    data.forward.forEach((step) => forward.appendChild(forwardStep(step)));
    $("inside-output").textContent = "";
    $("inside-output").appendChild(outputCards(data));
    const backward = $("inside-backward");
    backward.textContent = "";
    backward.appendChild(lossGradient(data));
    data.backward.forEach((step) => backward.appendChild(backwardStep(step)));
    $("inside-step").textContent = "";
    $("inside-step").appendChild(stepCard(data));
    showUnit(data);
    syncLabels(data.classes);
    panel.dataset.state = "done";
  }

  function clearView(message) {
    result = null;
    ["inside-forward", "inside-output", "inside-backward", "inside-step", "inside-unit-weights",
      "inside-unit-grad"].forEach((id) => { $(id).textContent = ""; });
    $("inside-input").hidden = true;
    $("inside-input-text").textContent = "";
    $("inside-unit-what").textContent = "–";
    $("inside-unit-numbers").textContent = "";
    showStatus(message);
    panel.dataset.state = "idle";
  }

  function showStatus(text, isError) {
    $("inside-status").textContent = text || "";
    $("inside-status").classList.toggle("error", Boolean(isError));
  }

  // ---- the request --------------------------------------------------------------------------------
  function source() { return document.querySelector('input[name="inside-source"]:checked').value; }

  function body() {
    const kind = source();
    let request;
    if (kind === "drawing") {
      if (!window.digitnet || !window.digitnet.hasInk) return null;
      request = { image: $("canvas").toDataURL("image/png") };
    } else if (kind === "test") {
      request = { test_index: Number($("inside-test-index").value) };
    } else {
      if (!upload) return null;
      request = { image: upload };
    }
    if ($("inside-label").value !== "") request.label = Number($("inside-label").value);
    request.lr = Number($("inside-lr").value);
    if (unit) request.unit = unit;
    return request;
  }

  function emptyMessage() {
    return source() === "upload" ? "choose an image file" : "draw a digit (or pick a test image)";
  }

  async function explain() {
    clearTimeout(timer);
    timer = null;
    if (panel.hidden) { stale = true; return; }
    if (inFlight) { pending = true; return; }
    const request = body();
    if (!request) { clearView(emptyMessage()); stale = false; return; }
    inFlight = true;
    stale = false;
    requests += 1;
    panel.dataset.state = "busy";
    const started = performance.now();
    try {
      const response = await fetch("/api/explain", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request) });
      const data = await response.json();
      if (pending) return;                       // a newer image is waiting: draw that one instead
      if (!response.ok) {
        if (request.unit && response.status === 422 && /unit/.test(data.error || "")) {
          unit = null; pending = true; return;   // the network changed under the chosen unit
        }
        clearView();
        showStatus(data.error || response.statusText, true);
        panel.dataset.state = "error";
        return;
      }
      render(data);
      const where = data.source.kind === "test" ? "test image " + data.source.index + " of " + data.source.dataset +
        " (label " + data.classes[data.source.label] + ")" : data.source.kind === "image" ? "the image" : "the pixels";
      showStatus(where + " explained in " + Math.round(performance.now() - started) + " ms (" +
        Math.round(data.elapsed_ms) + " ms in the server) · " + data.model);
    } catch (err) {
      showStatus("Request failed: " + err.message, true);
      panel.dataset.state = "error";
    } finally {
      inFlight = false;
      if (pending) { pending = false; explain(); }
    }
  }

  // schedule(): at most one request per DEBOUNCE_MS while the drawing (or a number) keeps changing;
  // schedule(0): at once (a click, a new choice)
  function schedule(delay) {
    if (delay === undefined) {
      if (timer === null) timer = setTimeout(explain, DEBOUNCE_MS);
      return;
    }
    clearTimeout(timer);
    timer = setTimeout(explain, delay);
  }

  function pickUnit(layer, index) {
    if (unit && unit.layer === layer && unit.index === index) return;
    unit = { layer: layer, index: index };
    schedule(0);
  }

  // ---- labels and classes ---------------------------------------------------------------------------
  // the label choices: the default (the predicted class, or a test image's own label) and every class;
  // a new source (or another test image) goes back to the default
  function syncLabels(names, reset) {
    const select = $("inside-label");
    const key = names.join("\u0001") + "|" + source();
    if (reset) select.value = "";
    if (select.dataset.key === key) return;
    const chosen = select.value;
    select.textContent = "";
    select.appendChild(new Option(source() === "test" ? "its own label" : "the predicted class", ""));
    names.forEach((name, k) => select.appendChild(new Option(name, String(k))));
    select.value = Array.from(select.options).some((o) => o.value === chosen) ? chosen : "";
    select.dataset.key = key;
    classes = names;
  }

  // ---- the drawing canvas comes along while this tab is shown ---------------------------------------
  const canvasWrap = $("canvas") ? $("canvas").closest(".canvas-wrap") : null;
  const canvasHome = canvasWrap ? { parent: canvasWrap.parentNode, next: canvasWrap.nextSibling } : null;

  function placeCanvas(shown) {
    if (!canvasWrap) return;
    if (shown && source() === "drawing") $("inside-canvas-slot").appendChild(canvasWrap);
    else if (canvasWrap.parentNode !== canvasHome.parent) canvasHome.parent.insertBefore(canvasWrap, canvasHome.next);
  }

  function tabShown(name) {
    placeCanvas(name === "inside");
    if (name === "inside" && stale) schedule(0);
  }

  // ---- wiring -------------------------------------------------------------------------------------
  document.addEventListener("digitnet:tab", (event) => tabShown(event.detail));
  document.addEventListener("digitnet:drawing", () => {
    if (source() !== "drawing") return;
    stale = true;
    if (!panel.hidden) schedule();
  });
  document.addEventListener("digitnet:model", (event) => {
    unit = null;
    syncLabels(event.detail.classes || []);
    stale = true;
    if (!panel.hidden) schedule(0);
  });
  document.querySelectorAll('input[name="inside-source"]').forEach((radio) => radio.addEventListener("change", () => {
    placeCanvas(!panel.hidden);
    syncLabels(classes, true);
    $("inside-clear").disabled = source() !== "drawing";
    schedule(0);
  }));
  $("inside-test-index").addEventListener("input", () => {
    document.querySelector('input[name="inside-source"][value="test"]').checked = true;
    placeCanvas(!panel.hidden);
    syncLabels(classes, true);
    schedule();
  });
  $("inside-upload").addEventListener("change", () => {
    const file = $("inside-upload").files[0];
    if (!file) return;
    const reader = new FileReader();
    reader.onload = () => {
      upload = reader.result;
      document.querySelector('input[name="inside-source"][value="upload"]').checked = true;
      placeCanvas(!panel.hidden);
      syncLabels(classes, true);
      schedule(0);
    };
    reader.readAsDataURL(file);
  });
  $("inside-clear").addEventListener("click", () => { if (window.digitnet) window.digitnet.clear(); });
  $("inside-label").addEventListener("change", () => schedule(0));
  $("inside-lr").addEventListener("input", () => schedule());
  $("inside-unit-layer").addEventListener("change", () => pickUnit(Number($("inside-unit-layer").value), 0));
  const unitIndexChosen = () => {
    const index = Math.round(Number($("inside-unit-index").value));
    if (Number.isFinite(index)) pickUnit(Number($("inside-unit-layer").value), index);
  };
  $("inside-unit-index").addEventListener("change", unitIndexChosen);
  $("inside-unit-index").addEventListener("keydown", (event) => { if (event.key === "Enter") unitIndexChosen(); });

  // for tests and scripts: what the tab shows
  window.digitnetInside = {
    get busy() { return inFlight || pending || timer !== null; },
    get result() { return result; },
    get requests() { return requests; },
  };

  syncLabels([]);
  clearView(emptyMessage());
  if (!panel.hidden) tabShown("inside");
})();
