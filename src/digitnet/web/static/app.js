// digitnet draw-a-digit page: plain JavaScript, no build step, no external requests.
// Draw on #canvas (pointer events: mouse, pen, touch); the drawing is sent as a PNG to
// POST /api/predict at most every ~150 ms while drawing and once more when the stroke ends.
"use strict";

(function () {
  const DEBOUNCE_MS = 150;
  const $ = (id) => document.getElementById(id);

  // ---- tabs: any [data-tab] button shows the [data-panel] section of the same name ----------
  function setupTabs() {
    const tabs = Array.from(document.querySelectorAll("[data-tab]"));
    const show = (name) => {
      tabs.forEach((tab) => tab.setAttribute("aria-selected", String(tab.dataset.tab === name)));
      document.querySelectorAll("[data-panel]").forEach((panel) => {
        panel.hidden = panel.dataset.panel !== name;
      });
      document.dispatchEvent(new CustomEvent("digitnet:tab", { detail: name }));
    };
    tabs.forEach((tab) => tab.addEventListener("click", () => {
      show(tab.dataset.tab);
      history.replaceState(null, "", "#" + tab.dataset.tab);
    }));
    const wanted = location.hash.slice(1);
    show(tabs.some((t) => t.dataset.tab === wanted) ? wanted : tabs[0].dataset.tab);
  }

  // ---- model info -----------------------------------------------------------------------------
  let classes = [];
  async function loadModel() {
    try {
      const response = await fetch("/api/model");
      const info = await response.json();
      if (!response.ok) throw new Error(info.error || response.statusText);
      classes = info.classes;
      const sizes = [info.input_shape.join("×")].concat(
        info.layers.filter((l) => l.params > 0).map((l) => l.output_shape.join("×")));
      const accuracy = info.metrics && (info.metrics.test_accuracy ?? info.metrics.accuracy);
      const parts = [info.name, sizes.join("–"), info.num_params.toLocaleString() + " params"];
      if (typeof accuracy === "number") parts.push("test accuracy " + (100 * accuracy).toFixed(1) + "%");
      $("model-badge").textContent = parts.join(" · ");
      $("model-details").textContent = (info.dataset ? "trained on " + info.dataset + " · " : "") +
        "digitnet " + info.digitnet_version;
      buildBars(classes);
      buildLayers(info.hidden_layers.map((h) => ({ name: h.name, shape: h.shape, values: [] })));
      document.dispatchEvent(new CustomEvent("digitnet:model", { detail: info }));
    } catch (err) {
      $("model-badge").textContent = "model unavailable";
      showStatus("Cannot reach the server: " + err.message, true);
    }
  }

  // ---- probability bars -----------------------------------------------------------------------
  function buildBars(names) {
    const list = $("probabilities");
    list.textContent = "";
    names.forEach((name) => {
      const item = document.createElement("li");
      item.innerHTML = '<span class="name"></span><span class="track"><span class="fill"></span></span>' +
        '<span class="pct">–</span>';
      item.querySelector(".name").textContent = name;
      list.appendChild(item);
    });
  }

  function showProbabilities(probabilities, label) {
    const items = $("probabilities").children;
    probabilities.forEach((p, k) => {
      const item = items[k];
      if (!item) return;
      item.classList.toggle("top", k === label);
      item.querySelector(".fill").style.width = (100 * p).toFixed(1) + "%";
      item.querySelector(".pct").textContent = (100 * p).toFixed(1) + "%";
    });
  }

  // ---- what the network sees and its hidden layers ---------------------------------------------
  function showInput(image) {
    const context = $("network-input").getContext("2d");
    const pixels = context.createImageData(28, 28);
    for (let r = 0; r < 28; r++) {
      for (let c = 0; c < 28; c++) {
        const v = image[r][c], i = 4 * (28 * r + c);
        pixels.data[i] = pixels.data[i + 1] = pixels.data[i + 2] = v;
        pixels.data[i + 3] = 255;
      }
    }
    context.putImageData(pixels, 0, 0);
  }

  function buildLayers(layers) {
    const box = $("activations");
    box.textContent = "";
    layers.forEach((layer) => {
      const units = layer.shape.reduce((a, b) => a * b, 1);
      const count = layer.values.length || units;
      const block = document.createElement("div");
      block.className = "layer";
      block.innerHTML = '<div class="layer-title"></div><div class="cells"></div>';
      block.querySelector(".layer-title").textContent = layer.name + " · " + units + " units";
      const cells = block.querySelector(".cells");
      if (count > 256) cells.classList.add("many");
      for (let k = 0; k < Math.min(count, 4096); k++) {
        const cell = document.createElement("span");
        cell.className = "cell";
        cells.appendChild(cell);
      }
      box.appendChild(block);
    });
  }

  // dark slate -> indigo -> amber: readable at a glance, monotone in brightness
  const STOPS = [[15, 23, 42], [79, 70, 229], [251, 191, 36]];
  function color(t) {
    t = Math.max(0, Math.min(1, t));
    const x = t * (STOPS.length - 1), i = Math.min(Math.floor(x), STOPS.length - 2), f = x - i;
    const a = STOPS[i], b = STOPS[i + 1];
    return "rgb(" + a.map((v, k) => Math.round(v + f * (b[k] - v))).join(",") + ")";
  }

  function showActivations(layers) {
    const blocks = $("activations").querySelectorAll(".layer");
    if (blocks.length !== layers.length ||
        layers.some((l, i) => blocks[i].querySelectorAll(".cell").length !== Math.min(l.values.length, 4096))) {
      buildLayers(layers);
    }
    $("activations").querySelectorAll(".layer").forEach((block, i) => {
      const values = layers[i].values;
      const peak = Math.max(1e-6, ...values.map(Math.abs));
      const active = values.filter((v) => v > 1e-6).length;
      const units = layers[i].shape.reduce((a, b) => a * b, 1);
      block.querySelector(".layer-title").textContent = layers[i].name + " · " + units + " units" +
        (layers[i].kind === "units" ? " · " + active + " active" : " · channel means");
      block.querySelectorAll(".cell").forEach((cell, k) => {
        cell.style.background = color(Math.abs(values[k]) / peak);
        cell.title = "unit " + k + ": " + values[k].toFixed(3);
      });
    });
  }

  // ---- status -------------------------------------------------------------------------------
  function showStatus(text, isError) {
    const status = $("status");
    status.textContent = text || "";
    status.classList.toggle("error", Boolean(isError));
  }

  function showResult(result) {
    $("prediction-label").textContent = result["class"];
    $("prediction-label").classList.toggle("long", result["class"].length > 3);  // garment names
    $("prediction-confidence").textContent = (100 * result.confidence).toFixed(1) + "% sure";
    showProbabilities(result.probabilities, result.label);
    showInput(result.image);
    showActivations(result.activations);
    showStatus("answered in " + result.elapsed_ms.toFixed(1) + " ms");
    $("prediction").dataset.state = "done";
  }

  function resetResult(message) {
    $("prediction-label").textContent = "–";
    $("prediction-confidence").textContent = message;
    showProbabilities(classes.map(() => 0), -1);
    $("probabilities").querySelectorAll(".pct").forEach((pct) => { pct.textContent = "–"; });
    $("network-input").getContext("2d").clearRect(0, 0, 28, 28);
    $("prediction").dataset.state = "idle";
  }

  // ---- prediction requests: one at a time, the latest drawing wins ------------------------------
  let inFlight = false, pending = null, timer = null, encoding = 0;

  async function send(body, contentType) {
    if (inFlight) { pending = [body, contentType]; return; }
    inFlight = true;
    $("prediction").dataset.state = "busy";
    try {
      const options = { method: "POST", body: body };
      if (contentType) options.headers = { "Content-Type": contentType };
      const response = await fetch("/api/predict", options);
      const result = await response.json();
      if (!response.ok) {
        resetResult("no prediction");
        showStatus(result.error || response.statusText, true);
        $("prediction").dataset.state = "error";
      } else if (!pending) {
        showResult(result);
      }
    } catch (err) {
      showStatus("Request failed: " + err.message, true);
      $("prediction").dataset.state = "error";
    } finally {
      inFlight = false;
      if (pending) { const next = pending; pending = null; send(next[0], next[1]); }
    }
  }

  // other tabs (Inside) follow the drawing: they hear of every change, at most as often as predictions
  function drawingChanged() { document.dispatchEvent(new CustomEvent("digitnet:drawing")); }

  function predictCanvas() {
    clearTimeout(timer);
    timer = null;
    if (!hasInk) return;
    drawingChanged();
    encoding += 1;  // toBlob is asynchronous: the request starts in its callback
    canvas.toBlob((blob) => {
      encoding -= 1;
      if (blob) send(blob, "image/png");
    }, "image/png");
  }

  function schedulePrediction() {
    if (timer === null) timer = setTimeout(predictCanvas, DEBOUNCE_MS);
  }

  // ---- drawing --------------------------------------------------------------------------------
  const canvas = $("canvas");
  const context = canvas.getContext("2d");
  let drawing = false, last = null, hasInk = false;

  function clearCanvas() {
    context.fillStyle = "#ffffff";
    context.fillRect(0, 0, canvas.width, canvas.height);
    hasInk = false;
    $("canvas-hint").classList.remove("hidden");
    resetResult("draw something");
    showStatus("");
    drawingChanged();
  }

  function point(event) {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width,
            (event.clientY - box.top) * canvas.height / box.height];
  }

  function stroke(from, to) {
    context.strokeStyle = "#111111";
    context.lineWidth = Number($("pen-width").value);
    context.lineCap = "round";
    context.lineJoin = "round";
    context.beginPath();
    context.moveTo(from[0], from[1]);
    context.lineTo(to[0], to[1]);
    context.stroke();
  }

  canvas.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    drawing = true;
    last = point(event);
    stroke(last, last);  // a dot for a tap
    hasInk = true;
    $("canvas-hint").classList.add("hidden");
    schedulePrediction();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const e of (events.length ? events : [event])) {
      const next = point(e);
      stroke(last, next);
      last = next;
    }
    schedulePrediction();
  });
  const endStroke = () => {
    if (!drawing) return;
    drawing = false;
    predictCanvas();
  };
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);

  // ---- upload ---------------------------------------------------------------------------------
  $("upload").addEventListener("change", () => {
    const file = $("upload").files[0];
    if (!file) return;
    const form = new FormData();
    form.append("file", file);
    send(form, null);
    // show the image on the canvas too (drawing on it then adds to it)
    const url = URL.createObjectURL(file);
    const image = new Image();
    image.onload = () => {
      context.fillStyle = "#ffffff";
      context.fillRect(0, 0, canvas.width, canvas.height);
      const scale = Math.min(canvas.width / image.width, canvas.height / image.height);
      const w = image.width * scale, h = image.height * scale;
      context.drawImage(image, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
      hasInk = true;
      $("canvas-hint").classList.add("hidden");
      URL.revokeObjectURL(url);
      drawingChanged();
    };
    image.src = url;
    $("upload").value = "";
  });

  // for tests and scripts: whether a prediction is still on its way
  // reloadModel: the live-training tab swapped in a new network: show it, and read the drawing again
  // hasInk: whether there is a drawing; clear(): what the Clear button does
  window.digitnet = {
    get busy() { return inFlight || pending !== null || timer !== null || encoding > 0; },
    get hasInk() { return hasInk; },
    clear() { clearCanvas(); },
    async reloadModel() { await loadModel(); if (hasInk) predictCanvas(); },
  };

  $("clear").addEventListener("click", clearCanvas);
  $("pen-width").addEventListener("input", () => { $("pen-width-value").textContent = $("pen-width").value; });

  setupTabs();
  clearCanvas();
  loadModel();
})();
