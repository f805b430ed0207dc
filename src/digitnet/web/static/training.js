// digitnet live training tab: plain JavaScript, no build step, no external requests.
// Start/pause/resume/stop a training job in the server (POST /api/train/*) and poll
// GET /api/train/status for new curve points, the epoch table and the first-layer weights picture.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const ACTIVE = ["loading", "running", "paused", "stopping"];
  const POLL_ACTIVE_MS = 400, POLL_IDLE_MS = 3000;

  let job = 0, since = 0, weightsVersion = -1, points = [], epochsLog = [], state = "idle";
  let totalEpochs = 1, reloadedFor = 0, timer = null, pictures = null;

  function showPicture() {
    if (!pictures) return;
    const view = $("train-weights-view").value;
    $("train-weights").src = pictures[view];
    $("train-weights").hidden = false;
    $("train-weights-empty").hidden = true;
  }

  // ---- settings: the choices, defaults and limits come from the server (the registry) --------------
  let options = null;

  async function loadOptions() {
    try {
      const response = await fetch("/api/train/options");
      const result = await response.json();
      if (!response.ok) throw new Error(result.error || response.statusText);
      options = result;
    } catch (err) {
      showStatus("Cannot load the training options: " + err.message, true);
      return;
    }
    const form = $("train-form");
    form.querySelectorAll("select[data-choices]").forEach((select) => {
      select.textContent = "";
      (options.entries[select.dataset.choices] || []).forEach((entry) => {
        const option = new Option(entry.label, entry.name, false, entry.name === options.defaults[select.name]);
        option.title = entry.summary || entry.formula;
        select.appendChild(option);
      });
    });
    for (const field of form.elements) {
      if (field.type !== "number") continue;
      const rule = options.constraints[field.name], cap = options.limits[field.name];
      if (cap) { field.min = cap[0]; field.max = cap[1]; } else if (rule && rule.low !== null && !rule.open_low) field.min = rule.low;
      const range = cap ? cap[0] + " to " + cap[1] + " on this page" : rule ? rule.range : "";
      if (range) field.title = field.name + ": " + range;
      if (options.defaults[field.name] !== undefined) field.value = options.defaults[field.name];
    }
    showFormulas();
  }

  function chosen(kind) {
    const select = $("train-form").querySelector('select[data-choices="' + kind + '"]');
    const entries = (options && options.entries[kind]) || [];
    return entries.find((entry) => select && entry.name === select.value);
  }

  // the chosen activation, optimizer, schedule and loss, each with its registered formula
  // (and the optimizer's settings with their ranges)
  function showFormulas() {
    const list = $("train-formulas");
    list.textContent = "";
    ["activation", "optimizer", "schedule", "loss"].forEach((kind) => {
      const entry = chosen(kind);
      if (!entry) return;
      const term = document.createElement("dt");
      term.textContent = entry.label;
      const formula = document.createElement("dd");
      const code = document.createElement("code");
      code.textContent = entry.formula;
      formula.appendChild(code);
      if (kind === "optimizer" && entry.settings.length) {
        const rules = document.createElement("span");
        rules.className = "rules";
        rules.textContent = entry.settings.map((s) => s.name + " " + s.range +
          (s.default !== null ? " (default " + s.default + ")" : "")).join(" · ");
        formula.appendChild(rules);
      }
      list.append(term, formula);
    });
  }

  function settings() {
    const form = $("train-form");
    const data = {};
    for (const field of form.elements) {
      if (!field.name) continue;
      const text = field.name === "hidden" || (field.tagName === "SELECT" && field.name !== "step_delay_ms");
      data[field.name] = text ? field.value.trim() : Number(field.value);
    }
    return data;
  }

  function showArch() {
    const hidden = $("train-hidden").value.split(/[\s,\-x]+/).filter(Boolean);
    $("train-arch").textContent = "network: " + ["784"].concat(hidden, ["10"]).join(" → ");
  }

  // ---- requests ---------------------------------------------------------------------------------
  async function post(path, body) {
    const options = { method: "POST" };
    if (body !== undefined) {
      options.headers = { "Content-Type": "application/json" };
      options.body = JSON.stringify(body);
    }
    try {
      const response = await fetch("/api/train/" + path, options);
      const result = await response.json();
      if (!response.ok) { showStatus(result.error || response.statusText, true); return null; }
      return result;
    } catch (err) {
      showStatus("Request failed: " + err.message, true);
      return null;
    }
  }

  function showStatus(text, isError) {
    $("train-status").textContent = text || "";
    $("train-status").classList.toggle("error", Boolean(isError));
  }

  async function start() {
    const result = await post("start", settings());
    if (!result) return;
    $("train-live-lr").value = result.settings.lr;
    reset(result.job);
    schedule(0);
  }

  function reset(number) {
    job = number; since = 0; weightsVersion = -1; points = []; epochsLog = []; pictures = null;
    $("train-result").hidden = true;
    draw();
  }

  // ---- polling ----------------------------------------------------------------------------------
  function schedule(delay) {
    clearTimeout(timer);
    timer = setTimeout(poll, delay);
  }

  function visible() { return !$("train-form").closest("[data-panel]").hidden; }

  async function poll() {
    const asked = since;
    try {
      const response = await fetch("/api/train/status?since=" + asked + "&weights=" + weightsVersion);
      const status = await response.json();
      if (status.job !== job) {               // a job started elsewhere (another tab): start over
        reset(status.job);
        if (asked !== 0) { schedule(0); return; }
      }
      apply(status);
    } catch (err) {
      showStatus("Cannot reach the server: " + err.message, true);
    }
    schedule(ACTIVE.includes(state) ? POLL_ACTIVE_MS : visible() ? POLL_IDLE_MS : 4 * POLL_IDLE_MS);
  }

  function apply(status) {
    state = status.state;
    points = points.concat(status.points || []);
    since = status.points_total || 0;
    epochsLog = status.epochs_log || [];
    totalEpochs = status.epochs || totalEpochs;
    if (status.weights) {
      pictures = { weights: status.weights, change: status.weights_change || status.weights };
      showPicture();
    }
    weightsVersion = status.weights_version;
    const active = ACTIVE.includes(state);
    $("train-start").disabled = active;
    $("train-pause").disabled = !active || state === "stopping" || state === "loading";
    $("train-pause").textContent = status.paused ? "Resume" : "Pause";
    $("train-stop").disabled = !active || state === "stopping";
    $("train-set-lr").disabled = !active || state === "stopping";
    $("train-progress").style.width = (100 * (status.progress || 0)).toFixed(1) + "%";
    $("train-position").textContent = position(status);
    if (state !== "idle") showStatus(status.message, state === "failed");
    document.body.dataset.training = state;
    if (status.model_ready && reloadedFor !== status.job && !active) {
      reloadedFor = status.job;
      $("train-result-text").textContent = "Test accuracy " + (100 * status.test_accuracy).toFixed(2) +
        "% on 10,000 test images. The Draw tab now uses this network.";
      $("train-result").hidden = false;
      if (window.digitnet && window.digitnet.reloadModel) window.digitnet.reloadModel();
    }
    draw();
  }

  function position(status) {
    if (status.state === "idle") return "not started";
    const parts = [status.state];
    if (status.batches_per_epoch) {
      const epoch = Math.min(status.epoch + (status.batch ? 1 : 0), status.epochs) || 1;
      parts.push("epoch " + epoch + " of " + status.epochs,
        "batch " + (status.batch || status.batches_per_epoch) + " of " + status.batches_per_epoch);
    }
    if (status.lr) parts.push("lr " + Number(status.lr.toPrecision(3)));
    if (status.train_images) parts.push(status.train_images.toLocaleString() + " training images");
    if (status.num_params) parts.push(status.num_params.toLocaleString() + " parameters");
    return parts.join(" · ");
  }

  // ---- charts -----------------------------------------------------------------------------------
  const TRAIN = "#4f46e5", VAL = "#f59e0b", GRID = "#e5e7eb", TEXT = "#6b7280";

  function chart(canvas, trainValues, valValues, fixedRange) {
    const context = canvas.getContext("2d");
    const width = canvas.width, height = canvas.height;
    const left = 44, right = 12, top = 10, bottom = 26;
    context.clearRect(0, 0, width, height);
    const all = trainValues.map((p) => p[1]).concat(valValues.map((p) => p[1])).filter(Number.isFinite);
    let low = 0, high = 1;
    if (fixedRange) {
      low = all.length ? Math.min(fixedRange[0], Math.floor(10 * Math.min(...all)) / 10) : fixedRange[0];
      high = fixedRange[1];
    } else {
      high = Math.ceil(2 * Math.max(0.5, ...all)) / 2;          // the next multiple of 0.5
    }
    const span = high - low, tickStep = [0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5].find((t) => span / t <= 6) || span / 4;
    const x = (epoch) => left + (width - left - right) * epoch / totalEpochs;
    const y = (value) => top + (height - top - bottom) * (1 - (value - low) / (high - low || 1));
    context.font = "11px system-ui, sans-serif";
    context.fillStyle = TEXT;
    context.strokeStyle = GRID;
    context.lineWidth = 1;
    for (let value = low; value <= high + 1e-9; value += tickStep) {   // horizontal grid lines with their values
      context.beginPath(); context.moveTo(left, y(value)); context.lineTo(width - right, y(value)); context.stroke();
      context.textAlign = "right"; context.textBaseline = "middle";
      context.fillText(value.toFixed(2), left - 6, y(value));
    }
    const step = Math.max(1, Math.ceil(totalEpochs / 10));
    context.textAlign = "center"; context.textBaseline = "top";
    for (let e = 0; e <= totalEpochs; e += step) context.fillText(String(e), x(e), height - bottom + 6);
    context.fillText("epoch", width - right - 16, height - 12);
    if (trainValues.length) {
      context.strokeStyle = TRAIN; context.lineWidth = 1.6; context.beginPath();
      trainValues.forEach((p, k) => (k ? context.lineTo(x(p[0]), y(p[1])) : context.moveTo(x(p[0]), y(p[1]))));
      context.stroke();
    }
    const valid = valValues.filter((p) => Number.isFinite(p[1]));
    if (valid.length) {
      context.strokeStyle = VAL; context.fillStyle = VAL; context.lineWidth = 1.6; context.beginPath();
      valid.forEach((p, k) => (k ? context.lineTo(x(p[0]), y(p[1])) : context.moveTo(x(p[0]), y(p[1]))));
      context.stroke();
      valid.forEach((p) => { context.beginPath(); context.arc(x(p[0]), y(p[1]), 3.5, 0, 2 * Math.PI); context.fill(); });
    }
  }

  function draw() {
    const loss = points.map((p) => [p.epoch, p.loss]);
    const accuracy = points.map((p) => [p.epoch, p.accuracy]);
    const valLoss = epochsLog.map((e) => [e.epoch, e.val_loss]);
    const valAccuracy = epochsLog.map((e) => [e.epoch, e.val_accuracy]);
    chart($("train-loss-chart"), loss, valLoss, null);
    chart($("train-accuracy-chart"), accuracy, valAccuracy, [0.8, 1]);
    $("train-loss-chart").dataset.points = String(points.length);
    table();
  }

  function table() {
    const box = $("train-epochs");
    box.textContent = "";
    if (!epochsLog.length) return;
    const head = box.insertRow();
    ["epoch", "train loss", "train acc.", "val. loss", "val. acc.", "lr", "seconds"].forEach((name) => {
      const cell = document.createElement("th");
      cell.textContent = name;
      head.appendChild(cell);
    });
    const fmt = (v, digits) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
    epochsLog.slice(-8).forEach((e) => {
      const row = box.insertRow();
      [e.epoch, fmt(e.train_loss, 4), fmt(100 * e.train_accuracy, 2) + "%",
        fmt(e.val_loss, 4), e.val_accuracy === null ? "–" : fmt(100 * e.val_accuracy, 2) + "%",
        Number(e.lr.toPrecision(3)), fmt(e.seconds, 2)].forEach((value) => {
        row.insertCell().textContent = String(value);
      });
    });
  }

  // ---- wiring -----------------------------------------------------------------------------------
  $("train-start").addEventListener("click", start);
  // control answers carry the whole status; the next poll picks up what changed (points only once)
  $("train-pause").addEventListener("click", async () => {
    await post($("train-pause").textContent === "Resume" ? "resume" : "pause");
    schedule(0);
  });
  $("train-stop").addEventListener("click", async () => {
    await post("stop");
    schedule(0);
  });
  $("train-set-lr").addEventListener("click", async () => {
    if (await post("lr", { lr: Number($("train-live-lr").value) })) schedule(0);
  });
  $("train-weights-view").addEventListener("change", showPicture);
  $("train-draw").addEventListener("click", () => {
    const tab = document.querySelector('[data-tab="draw"]');
    if (tab) tab.click();
  });
  $("train-hidden").addEventListener("input", showArch);
  $("train-form").querySelectorAll("select[data-choices]").forEach((select) => select.addEventListener("change", showFormulas));
  document.querySelectorAll("[data-tab]").forEach((tab) => tab.addEventListener("click", () => schedule(0)));

  // for tests and scripts: what the page shows
  window.digitnetTraining = {
    get state() { return state; },
    get points() { return points.length; },
    get epochs() { return epochsLog.length; },
    get job() { return job; },
    get optionsLoaded() { return options !== null; },
  };

  loadOptions();
  showArch();
  draw();
  poll();
})();
