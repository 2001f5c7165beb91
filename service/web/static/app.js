// The triage page: sends the chosen file to /explain and shows what comes back. No framework and
// nothing fetched from outside the service, so it works on a hospital network without internet.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, body: null, shown: "ensemble" };
const KEY_STORAGE = "xray-api-key";

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
  $("status").textContent = "";
}

async function analyse() {
  if (!state.file) return;
  $("error").hidden = true;
  $("status").textContent = "Analysing…";
  // Sent as the multipart field `file`: the service tells the container from the bytes, the part's
  // type and the file name (its table of decoders), so the page needs no list of its own.
  const form = new FormData();
  form.append("file", state.file, state.file.name);
  const headers = {};
  const key = $("api-key").value.trim();
  if (key) headers["X-API-Key"] = key;
  const target = encodeURIComponent($("target").value);
  let response;
  try {
    response = await fetch(`/explain?method=gradcam&include_image=true&target=${target}`, {
      method: "POST", headers, body: form,
    });
  } catch (error) {
    showError(`The service could not be reached: ${error.message}`);
    return;
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    // problem+json (RFC 9457): show its detail as the service wrote it.
    showError(body && body.detail ? `${body.title || "Error"}: ${body.detail}` : `HTTP ${response.status}`);
    return;
  }
  state.body = body;
  $("status").textContent = "Done.";
  render(body);
}

function bars(probabilities) {
  const grid = document.createElement("div");
  grid.className = "bars";
  for (const [label, value] of Object.entries(probabilities)) {
    const name = document.createElement("span");
    name.textContent = label;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-label", `${label} probability`);
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "1");
    bar.setAttribute("aria-valuenow", String(value));
    const fill = document.createElement("span");
    fill.style.width = `${(100 * value).toFixed(1)}%`;
    bar.append(fill);
    const number = document.createElement("span");
    number.className = "probability";
    number.dataset.label = label;
    number.dataset.value = String(value);
    number.textContent = value.toFixed(3);
    grid.append(name, bar, number);
  }
  return grid;
}

const REASON_TEXT = {
  low_confidence: "low confidence",
  out_of_distribution: "not like the training radiographs",
  models_disagree: "the models disagree",
};

function showInputCheck(check) {
  const outside = check && !check.in_distribution;
  $("results").classList.toggle("ood", Boolean(outside));
  $("out-of-distribution").hidden = !outside;
  $("out-of-distribution-detail").textContent = outside
    ? `The input check (${check.method}) scores it ${check.score.toFixed(1)}; ` +
      `chest radiographs score below ${check.threshold.toFixed(1)}.`
    : "";
}

// One sentence per ensemble, so that a reader knows why the two can answer differently.
const ENSEMBLE_TEXT = {
  classic: "The mean of the three models' calibrated probabilities: every model counts equally.",
  confidence: "A cascade: the models are asked in turn and the first one that is sure enough " +
    "(top probability at least the manifest's tau) decides alone; if none is, the mean decides.",
};

function block(name, result, isEnsemble) {
  const section = document.createElement("div");
  section.className = "decision" + (isEnsemble ? " ensemble" : "") + (result.uncertain ? " uncertain" : "");
  section.dataset.predictor = name;
  const title = document.createElement(isEnsemble ? "h3" : "h4");
  let text = `${name}: ${result.label} (${result.confidence.toFixed(3)})`;
  if (isEnsemble && result.decided_by) text += ` — decided by ${result.decided_by}`;
  title.textContent = text;
  title.className = "label";
  title.dataset.label = result.label;
  if (isEnsemble && result.uncertain) {
    const reasons = (result.uncertain_reasons || []).map((r) => REASON_TEXT[r] || r).join("; ");
    const flag = document.createElement("span");
    flag.className = "flag";
    flag.textContent = `uncertain (${reasons}): needs a human look`;
    title.append(" ", flag);
  }
  section.append(title);
  if (isEnsemble && ENSEMBLE_TEXT[name]) {
    const what = document.createElement("p");
    what.className = "what";
    what.textContent = ENSEMBLE_TEXT[name];
    section.append(what);
  }
  section.append(bars(result.probabilities));
  return section;
}

function render(body) {
  showInputCheck(body.input_check);
  const ensembles = $("ensembles");
  const models = $("models");
  ensembles.replaceChildren(...Object.entries(body.ensembles).map(([n, r]) => block(n, r, true)));
  models.replaceChildren(...Object.entries(body.models).map(([n, r]) => block(n, r, false)));
  $("versions").textContent = "Model versions: " +
    Object.entries(body.model_versions).map(([n, v]) => `${n} ${v}`).join(", ");
  const choice = $("overlay-choice");
  choice.replaceChildren();
  if (!(state.shown in body.explanations)) state.shown = "ensemble";
  for (const name of Object.keys(body.explanations)) {
    const id = `overlay-${name}`;
    const input = document.createElement("input");
    Object.assign(input, { type: "radio", name: "overlay", id, value: name, checked: name === state.shown });
    input.addEventListener("change", () => { state.shown = name; showOverlay(); });
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = name;
    const wrap = document.createElement("span");
    wrap.append(input, label);
    choice.append(wrap);
  }
  $("radiograph").src = `data:image/png;base64,${body.image_png}`;
  fillTargets(body.classes);
  showOverlay();
  $("viewer").hidden = false;
  $("results").hidden = false;
}

function showOverlay() {
  const map = state.body.explanations[state.shown];
  const overlay = $("overlay");
  overlay.src = `data:image/png;base64,${map.overlay_png}`;
  overlay.dataset.model = state.shown;
  overlay.style.opacity = String($("opacity").value / 100);
  $("overlay-caption").textContent = `Grad-CAM of ${state.shown} for "${map.target}"` +
    (map.layer ? ` (layer ${map.layer})` : "");
}

function fillTargets(classes) {
  const select = $("target");
  if (select.options.length > 1) return;
  for (const name of classes) select.add(new Option(name, name));
}

function choose(file) {
  if (!file) return;
  state.file = file;
  analyse();
}

window.addEventListener("DOMContentLoaded", () => {
  const drop = $("drop");
  $("api-key").value = sessionStorage.getItem(KEY_STORAGE) || "";
  $("api-key").addEventListener("change", (event) => sessionStorage.setItem(KEY_STORAGE, event.target.value));
  $("file").addEventListener("change", (event) => choose(event.target.files[0]));
  for (const kind of ["dragenter", "dragover"]) {
    drop.addEventListener(kind, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const kind of ["dragleave", "drop"]) {
    drop.addEventListener(kind, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => { event.preventDefault(); choose(event.dataTransfer.files[0]); });
  $("opacity").addEventListener("input", (event) => {
    $("opacity-value").textContent = `${event.target.value}%`;
    if (state.body) showOverlay();
  });
  $("target").addEventListener("change", analyse);
});
