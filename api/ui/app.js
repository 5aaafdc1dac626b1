// cropq's /ui page: submits a crop job to the public API with the key the user pastes, long-polls it, and
// draws every crop and detection over the picture. No framework, no build step: one ES module.
//
// Nothing is stored in the browser but the key, the secret and the project, and only in this tab's
// sessionStorage. The page never sets cookies; every API call carries the key in its Authorization header.

const STORE_KEY = "cropq.session";
const RATIOS = ["1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3", "4:5"];
const DEFAULT_RATIOS = ["1:1", "16:9"];
const MAX_RATIOS = 5;
const WAIT_SECONDS = 20;
const PROJECT_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;
const TRANSIENT_RETRIES = 5;
// Light colours that keep dark label text readable (contrast > 7:1) and stand out on most photos.
const PALETTE = ["#22d3ee", "#facc15", "#f472b6", "#4ade80", "#c4b5fd", "#fb923c"];
const CARD_PREVIEW = 64;

const $ = (id) => document.getElementById(id);

const el = {
  form: $("job-form"),
  keyId: $("key-id"),
  keySecret: $("key-secret"),
  project: $("project"),
  forget: $("forget"),
  dropZone: $("drop-zone"),
  file: $("file"),
  fileInfo: $("file-info"),
  sourceUri: $("source-uri"),
  ratioGrid: $("ratio-grid"),
  hint: $("hint"),
  renderDetails: $("render-details"),
  targetUri: $("target-uri"),
  format: $("format"),
  submit: $("submit"),
  formError: $("form-error"),
  status: $("status"),
  toggleDetections: $("toggle-detections"),
  detectionCount: $("detection-count"),
  jobError: $("job-error"),
  empty: $("empty"),
  stageArea: $("stage-area"),
  stage: $("stage"),
  image: $("image"),
  cropsLayer: $("crops-layer"),
  detectionsLayer: $("detections-layer"),
  summary: $("summary"),
  cropList: $("crop-list"),
  downloadAll: $("download-all"),
  jobMeta: $("job-meta"),
};

/** What the page shows now: the chosen file, the image's object URL, the finished job. */
const state = {
  file: null,
  imageUrl: null, // an object URL we created (revoked when replaced)
  job: null,
  jobPath: null,
  creds: null,
  controller: null,
};

// ---------------------------------------------------------------- API access

class ApiError extends Error {
  constructor(status, code, message, requestId = "") {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }
}

const enc = encodeURIComponent;

async function apiFetch(path, creds, init = {}) {
  const headers = new Headers(init.headers || {});
  headers.set("Authorization", `Bearer ${creds.AccessKeyId}:${creds.AccessKeySecret}`);
  let resp;
  try {
    resp = await fetch(path, { ...init, headers, credentials: "omit", cache: "no-store" });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "NetworkError", "The API did not answer. Is the service running and reachable?");
  }
  if (!resp.ok) throw await errorOf(resp);
  return resp;
}

/** The API's {Code, Message, RequestId} body as an ApiError (or a plain one for a non-JSON answer). */
async function errorOf(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  if (body && typeof body.Code === "string") {
    return new ApiError(resp.status, body.Code, String(body.Message || ""), String(body.RequestId || ""));
  }
  return new ApiError(resp.status, `HTTP ${resp.status}`, resp.statusText || "Unexpected answer from the API.");
}

const transient = (e) => e instanceof ApiError && (e.status === 0 || e.status === 429 || e.status >= 500);
const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      reject(new DOMException("aborted", "AbortError"));
    });
  });

// ---------------------------------------------------------------- credentials (sessionStorage only)

function loadCreds() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");
    if (saved && typeof saved === "object") {
      el.keyId.value = saved.AccessKeyId || "";
      el.keySecret.value = saved.AccessKeySecret || "";
      el.project.value = saved.Project || "";
    }
  } catch {
    sessionStorage.removeItem(STORE_KEY);
  }
}

function saveCreds(creds) {
  sessionStorage.setItem(STORE_KEY, JSON.stringify(creds));
}

el.forget.addEventListener("click", () => {
  sessionStorage.removeItem(STORE_KEY);
  el.keyId.value = el.keySecret.value = el.project.value = "";
  setStatus("idle", "The key is forgotten: this tab holds nothing now.");
  el.keyId.focus();
});

// ---------------------------------------------------------------- form: image source

function humanBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} kB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function setFile(file) {
  state.file = file;
  el.dropZone.classList.toggle("has-file", Boolean(file));
  el.fileInfo.textContent = file ? `${file.name || "pasted image"} · ${humanBytes(file.size)}` : "";
  if (file) {
    el.sourceUri.value = "";
    showImage(URL.createObjectURL(file), true);
    clearResult();
    el.stage.hidden = false;
    el.empty.hidden = true;
  }
}

el.file.addEventListener("change", () => setFile(el.file.files[0] || null));
el.sourceUri.addEventListener("input", () => {
  if (el.sourceUri.value.trim() && state.file) {
    el.file.value = "";
    setFile(null);
  }
});

for (const type of ["dragenter", "dragover"]) {
  el.dropZone.addEventListener(type, (e) => {
    e.preventDefault();
    el.dropZone.classList.add("dragging");
  });
}
for (const type of ["dragleave", "drop"]) {
  el.dropZone.addEventListener(type, () => el.dropZone.classList.remove("dragging"));
}
el.dropZone.addEventListener("drop", (e) => {
  e.preventDefault();
  const file = [...(e.dataTransfer?.files || [])].find((f) => f.type.startsWith("image/") || !f.type);
  if (file) setFile(file);
});
// A file dropped beside the zone must not make the browser navigate away to it.
window.addEventListener("dragover", (e) => e.preventDefault());
window.addEventListener("drop", (e) => e.preventDefault());

document.addEventListener("paste", (e) => {
  const item = [...(e.clipboardData?.items || [])].find((i) => i.kind === "file" && i.type.startsWith("image/"));
  if (!item) return;
  e.preventDefault();
  setFile(item.getAsFile());
});

// ---------------------------------------------------------------- form: ratios

function buildRatios() {
  for (const r of [...RATIOS, "auto"]) {
    const label = document.createElement("label");
    label.className = "ratio";
    const input = document.createElement("input");
    input.type = "checkbox";
    input.name = "ratio";
    input.value = r;
    input.id = r === "auto" ? "ratio-auto" : `ratio-${r.replace(":", "x")}`;
    input.checked = DEFAULT_RATIOS.includes(r);
    label.append(input, document.createTextNode(r));
    if (r !== "auto") {
      // A little outline of the shape, so 4:5 and 5:4 are told apart at a glance.
      const [w, h] = r.split(":").map(Number);
      const shape = document.createElement("span");
      shape.className = "ratio-shape";
      const k = 16 / Math.max(w, h);
      shape.style.width = `${Math.round(w * k)}px`;
      shape.style.height = `${Math.round(h * k)}px`;
      shape.setAttribute("aria-hidden", "true");
      label.append(shape);
    }
    el.ratioGrid.append(label);
  }
  el.ratioGrid.addEventListener("change", syncRatios);
  syncRatios();
}

function ratioInputs() {
  return [...el.ratioGrid.querySelectorAll("input[name=ratio]")];
}

/** auto excludes the others; at most five ratios may be ticked (the rest are disabled until one is freed). */
function syncRatios(e) {
  const inputs = ratioInputs();
  const auto = inputs.find((i) => i.value === "auto");
  if (e?.target === auto && auto.checked) inputs.forEach((i) => i !== auto && (i.checked = false));
  if (e?.target && e.target !== auto && e.target.checked) auto.checked = false;
  const fixed = inputs.filter((i) => i !== auto);
  const count = fixed.filter((i) => i.checked).length;
  for (const i of fixed) i.disabled = !i.checked && count >= MAX_RATIOS;
  $("ratio-hint").textContent = count >= MAX_RATIOS ? "5 of 5 chosen" : "up to 5, or auto";
}

function selectedRatios() {
  return ratioInputs()
    .filter((i) => i.checked)
    .map((i) => i.value);
}

// ---------------------------------------------------------------- form: render target

const EXTENSIONS = { jpeg: "jpg", webp: "webp", png: "png", avif: "avif" };
el.format.addEventListener("change", () => {
  // Keep the template's extension in step with the chosen format.
  const v = el.targetUri.value;
  const m = v.match(/\.(jpe?g|webp|png|avif)$/i);
  if (m) el.targetUri.value = v.slice(0, m.index + 1) + EXTENSIONS[el.format.value];
});

// ---------------------------------------------------------------- submit

function fieldError(input, message) {
  input.setAttribute("aria-invalid", "true");
  return { input, message };
}

function readForm() {
  for (const i of el.form.querySelectorAll("[aria-invalid]")) i.removeAttribute("aria-invalid");
  const errors = [];
  const creds = {
    AccessKeyId: el.keyId.value.trim(),
    AccessKeySecret: el.keySecret.value.trim(),
    Project: el.project.value.trim(),
  };
  if (!creds.AccessKeyId || /[\s:]/.test(creds.AccessKeyId))
    errors.push(fieldError(el.keyId, "Paste your AccessKeyId."));
  if (!creds.AccessKeySecret || /\s/.test(creds.AccessKeySecret))
    errors.push(fieldError(el.keySecret, "Paste your AccessKeySecret."));
  if (!PROJECT_PATTERN.test(creds.Project))
    errors.push(fieldError(el.project, "Project: letters, digits, - and _ (1 to 128)."));

  const uri = el.sourceUri.value.trim();
  if (!state.file && !uri) errors.push(fieldError(el.file, "Choose an image, or paste a SourceURI."));
  else if (!state.file && !/^(oss|s3|https?):\/\/\S+$/i.test(uri))
    errors.push(fieldError(el.sourceUri, "A SourceURI starts with oss://, s3:// or https://."));

  const ratios = selectedRatios();
  if (ratios.length === 0) errors.push(fieldError(ratioInputs()[0], "Pick at least one aspect ratio, or auto."));

  const job = { AspectRatios: ratios };
  const hint = el.hint.value.trim();
  if (hint) job.InclusionHints = [hint];
  const target = el.targetUri.value.trim();
  if (target) {
    if (!/^(oss|s3):\/\/[^/\s]+\/\S+$/i.test(target)) {
      el.renderDetails.open = true;
      errors.push(fieldError(el.targetUri, "A TargetURI looks like oss://bucket/{Stem}/{Ratio}.webp."));
    }
    job.Render = { TargetURI: target, Format: el.format.value };
  }
  return { creds, uri, job, errors };
}

function showFormErrors(errors) {
  el.formError.replaceChildren();
  if (!errors.length) {
    el.formError.hidden = true;
    return;
  }
  const list = document.createElement("ul");
  list.className = "error-list";
  for (const { message } of errors) {
    const li = document.createElement("li");
    li.textContent = message;
    list.append(li);
  }
  el.formError.append(list);
  el.formError.hidden = false;
  errors[0].input.focus();
}

function setBusy(busy) {
  el.submit.disabled = busy;
  el.submit.classList.toggle("busy", busy);
  el.submit.querySelector(".submit-text").textContent = busy ? "Cropping…" : "Crop";
}

function setStatus(kind, text) {
  el.status.dataset.state = kind;
  el.status.textContent = text;
}

function showJobError(err) {
  el.jobError.replaceChildren();
  const code = document.createElement("span");
  code.className = "error-code";
  code.textContent = err.code ? `${err.code}:` : "Error:";
  el.jobError.append(code, document.createTextNode(` ${err.message || "Something went wrong."}`));
  if (err.requestId) {
    const rid = document.createElement("span");
    rid.className = "error-id mono";
    rid.textContent = `RequestId ${err.requestId}`;
    el.jobError.append(rid);
  }
  el.jobError.hidden = false;
}

el.form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const { creds, uri, job, errors } = readForm();
  showFormErrors(errors);
  if (errors.length) return;
  saveCreds(creds);

  state.controller?.abort();
  const controller = new AbortController();
  state.controller = controller;
  const { signal } = controller;
  const file = state.file;
  const base = `/v1/projects/${enc(creds.Project)}/crop-jobs`;

  clearResult();
  el.jobError.hidden = true;
  setBusy(true);
  const started = performance.now();
  try {
    setStatus("running", file ? "Uploading the image…" : "Submitting the job…");
    let resp;
    if (file) {
      const body = new FormData();
      body.append("Image", file, file.name || "image");
      body.append("Job", JSON.stringify(job));
      resp = await apiFetch(base, creds, { method: "POST", body, signal });
    } else {
      resp = await apiFetch(base, creds, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ SourceURI: uri, ...job }),
        signal,
      });
    }
    const accepted = await resp.json();
    const jobPath = `${base}/${enc(accepted.RequestId)}`;
    state.creds = creds;
    state.jobPath = jobPath;
    el.jobMeta.textContent = "";
    setStatus("running", `${accepted.Status || "Queued"} · RequestId ${accepted.RequestId}`);

    // The picture loads while the job runs: the local file, or the source fetched through the API.
    const shown = file ? Promise.resolve() : showSource(jobPath, creds, uri, signal);
    const result = await poll(jobPath, creds, signal);
    await shown;
    if (signal.aborted) return;
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    if (result.Status === "Failed") {
      setStatus("failed", `Failed after ${seconds} s`);
      showJobError(new ApiError(0, result.Code || "Failed", result.Message || "The job failed.", result.RequestId));
      return;
    }
    state.job = result;
    const n = (result.Croppings || []).length;
    setStatus("done", `Succeeded · ${n} crop${n === 1 ? "" : "s"} in ${seconds} s`);
    renderResult();
  } catch (err) {
    if (err.name === "AbortError") return;
    setStatus("failed", "Not done");
    showJobError(err instanceof ApiError ? err : new ApiError(0, "Error", String(err.message || err)));
  } finally {
    if (state.controller === controller) setBusy(false);
  }
});

/** Long-poll the job until it ends; a throttled or briefly unavailable API is retried with a back-off. */
async function poll(jobPath, creds, signal) {
  let failures = 0;
  for (;;) {
    try {
      const resp = await apiFetch(`${jobPath}?wait=${WAIT_SECONDS}`, creds, { signal });
      const job = await resp.json();
      failures = 0;
      if (job.Status === "Succeeded" || job.Status === "Failed") return job;
      setStatus("running", `${job.Status} · RequestId ${job.RequestId}`);
    } catch (err) {
      if (!transient(err) || ++failures > TRANSIENT_RETRIES) throw err;
      setStatus("running", `${err.code}: retrying (${failures} of ${TRANSIENT_RETRIES})…`);
      await sleep(500 * 2 ** failures, signal);
    }
  }
}

/** Show the job's source: its bytes through the API, or (an http(s) source, 404 there) the URL itself. */
async function showSource(jobPath, creds, uri, signal) {
  try {
    const resp = await apiFetch(`${jobPath}/source`, creds, { signal });
    showImage(URL.createObjectURL(await resp.blob()), true);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    if (/^https:\/\//i.test(uri)) showImage(uri, false);
    else showImage(null, false);
  }
}

// ---------------------------------------------------------------- the picture and its overlays

function showImage(url, owned) {
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.imageUrl = owned ? url : null;
  el.stage.hidden = false;
  el.empty.hidden = true;
  if (!url) {
    el.image.removeAttribute("src");
    el.stage.classList.add("no-image");
    layout();
    return;
  }
  el.stage.classList.remove("no-image");
  el.image.referrerPolicy = "no-referrer";
  el.image.src = url;
}

el.image.addEventListener("load", () => {
  el.image.alt = state.job ? "The source image with its crops drawn on it" : "The chosen image";
  layout();
  drawCardPreviews();
});
el.image.addEventListener("error", () => {
  // An image the browser cannot show (e.g. HEIC, or a blocked URL): the crops are drawn on a placeholder.
  if (el.image.getAttribute("src")) {
    el.image.removeAttribute("src");
    el.stage.classList.add("no-image");
    layout();
  }
});

/** The picture's size in the page: as large as the stage allows (small images are scaled up too). */
function fitStage() {
  const job = state.job;
  const imgW = job?.ImageWidth || el.image.naturalWidth;
  const imgH = job?.ImageHeight || el.image.naturalHeight;
  if (!imgW || !imgH) return null;
  const style = getComputedStyle(el.stageArea);
  const padX = parseFloat(style.paddingLeft) + parseFloat(style.paddingRight);
  const maxW = el.stageArea.clientWidth - padX;
  const maxH = Math.max(320, Math.min(window.innerHeight * 0.68, 760));
  const scale = Math.min(maxW / imgW, maxH / imgH);
  const w = Math.max(1, Math.floor(imgW * scale));
  const h = Math.max(1, Math.floor(imgH * scale));
  el.stage.style.width = `${w}px`;
  el.stage.style.height = `${h}px`;
  return { w, h, imgW, imgH };
}

/** Place every box: API pixels times (displayed size / ImageWidth x ImageHeight). Runs on every resize. */
function layout() {
  const fit = fitStage();
  if (!fit || !state.job) return;
  const sx = fit.w / fit.imgW;
  const sy = fit.h / fit.imgH;
  // Labels start at their box's top-left corner (a detection's just above it) and move down a row while
  // they would cover a label already placed: crops first, as theirs matter most.
  const placed = [];
  for (const box of el.cropsLayer.children) placeLabel(box, box.querySelector(".crop-label"), sx, sy, -2, placed);
  for (const box of el.detectionsLayer.children) {
    const label = box.querySelector(".det-label");
    const above = Number(box.dataset.top) * sy >= label.offsetHeight ? -label.offsetHeight : 0;
    placeLabel(box, label, sx, sy, above, placed);
  }
}

function placeLabel(box, label, sx, sy, start, placed) {
  place(box, sx, sy);
  const x = Number(box.dataset.left) * sx;
  const y = Number(box.dataset.top) * sy + start;
  const w = label.offsetWidth + 2;
  const h = label.offsetHeight + 1;
  const covers = (top) => placed.some((p) => x < p.x + p.w && p.x < x + w && top < p.y + p.h && p.y < top + h);
  let row = 0;
  while (row < 12 && covers(y + row * h)) row++;
  placed.push({ x, y: y + row * h, w, h });
  label.style.top = `${start + row * h}px`;
}

function place(box, sx, sy) {
  box.style.left = `${Number(box.dataset.left) * sx}px`;
  box.style.top = `${Number(box.dataset.top) * sy}px`;
  box.style.width = `${Number(box.dataset.width) * sx}px`;
  box.style.height = `${Number(box.dataset.height) * sy}px`;
}

new ResizeObserver(() => layout()).observe(el.stageArea);

function setBoxData(box, b) {
  box.dataset.left = String(b.Left);
  box.dataset.top = String(b.Top);
  box.dataset.width = String(b.Width);
  box.dataset.height = String(b.Height);
}

const confidence = (c) => Number(c).toFixed(2);

function clearResult() {
  state.job = null;
  el.cropsLayer.replaceChildren();
  el.detectionsLayer.replaceChildren();
  el.cropList.replaceChildren();
  el.summary.hidden = true;
  el.downloadAll.hidden = true;
  el.stage.classList.remove("crops-focus");
  el.detectionCount.textContent = "";
  for (const k of ["requestId", "imageWidth", "imageHeight"]) delete el.stage.dataset[k];
}

function renderResult() {
  const job = state.job;
  const crops = job.Croppings || [];
  crops.forEach((c, i) => {
    const color = PALETTE[i % PALETTE.length];
    const box = document.createElement("div");
    box.className = "crop";
    box.id = `crop-${i}`;
    box.dataset.index = String(i);
    box.dataset.ratio = c.AspectRatio;
    box.dataset.confidence = String(c.Confidence);
    setBoxData(box, c.Boundary);
    box.style.setProperty("--c", color);
    const label = document.createElement("span");
    label.className = "crop-label";
    label.textContent = `${c.AspectRatio} · ${confidence(c.Confidence)}`;
    box.append(label);
    el.cropsLayer.append(box);
    el.cropList.append(card(c, i, color));
  });
  (job.Detections || []).forEach((d, i) => {
    const box = document.createElement("div");
    box.className = `det det-${d.Type}`;
    box.id = `det-${i}`;
    box.dataset.type = d.Type;
    box.dataset.label = d.Label;
    setBoxData(box, d.Boundary);
    const label = document.createElement("span");
    label.className = "det-label";
    // A hinted object's label says so: "hint: face" beside the face detector's own "face".
    const name = d.Type === "hint" ? `hint: ${d.Label}` : d.Label || d.Type;
    label.textContent = `${name} · ${confidence(d.Confidence)}`;
    box.append(label);
    el.detectionsLayer.append(box);
  });
  el.detectionsLayer.hidden = !el.toggleDetections.checked;
  el.downloadAll.hidden = !crops.some((c) => c.Output);
  el.summary.hidden = crops.length === 0;
  const nDet = (job.Detections || []).length;
  el.detectionCount.textContent = `(${nDet})`;
  el.jobMeta.textContent =
    `RequestId ${job.RequestId} · ${job.ImageWidth} × ${job.ImageHeight} px · ` +
    `${nDet} detection${nDet === 1 ? "" : "s"}` +
    ((job.MatchedInclusionHints || []).length ? ` · hint matched: ${job.MatchedInclusionHints.join(", ")}` : "");
  el.image.alt = "The source image with its crops drawn on it";
  el.stage.dataset.requestId = job.RequestId;
  el.stage.dataset.imageWidth = String(job.ImageWidth);
  el.stage.dataset.imageHeight = String(job.ImageHeight);
  layout();
  drawCardPreviews();
}

function card(c, i, color) {
  const li = document.createElement("li");
  li.className = "card";
  li.id = `card-${i}`;
  li.tabIndex = 0;
  li.dataset.index = String(i);
  li.style.setProperty("--c", color);
  const b = c.Boundary;
  li.setAttribute(
    "aria-label",
    `Crop ${i + 1}: ${c.AspectRatio}, confidence ${confidence(c.Confidence)}, ` +
      `${b.Width} by ${b.Height} pixels at ${b.Left}, ${b.Top}`,
  );

  const canvas = document.createElement("canvas");
  canvas.setAttribute("aria-hidden", "true");
  const [rw, rh] = c.AspectRatio.split(":").map(Number);
  const k = CARD_PREVIEW / Math.max(rw || 1, rh || 1);
  canvas.width = Math.round((rw || 1) * k * devicePixelRatio);
  canvas.height = Math.round((rh || 1) * k * devicePixelRatio);
  canvas.style.width = `${Math.round((rw || 1) * k)}px`;
  canvas.style.height = `${Math.round((rh || 1) * k)}px`;

  const body = document.createElement("div");
  body.className = "card-body";
  const title = document.createElement("div");
  title.className = "card-title";
  const ratio = document.createElement("span");
  ratio.className = "card-ratio";
  ratio.textContent = c.AspectRatio;
  const conf = document.createElement("span");
  conf.className = "card-confidence";
  conf.textContent = confidence(c.Confidence);
  title.append(ratio, conf);
  const meter = document.createElement("div");
  meter.className = "meter";
  const fill = document.createElement("div");
  fill.className = "meter-fill";
  fill.style.width = `${Math.round(Math.max(0, Math.min(1, c.Confidence)) * 100)}%`;
  meter.append(fill);
  const geo = document.createElement("span");
  geo.className = "card-box mono";
  geo.textContent = `${b.Width}×${b.Height} at ${b.Left},${b.Top}`;
  body.append(title, meter, geo);

  if (c.Output) {
    const o = c.Output;
    const out = document.createElement("span");
    out.className = "card-output";
    out.textContent = `${o.Format} ${o.Width}×${o.Height} · ${humanBytes(o.Bytes)}`;
    out.title = o.URI;
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "secondary download";
    btn.id = `download-${i}`;
    btn.textContent = "Download";
    btn.setAttribute("aria-label", `Download the ${c.AspectRatio} crop (${o.Format})`);
    btn.addEventListener("click", () => download(i, btn));
    body.append(out, btn);
  }
  li.append(canvas, body);

  // Pointing at (or tabbing to) a card lights its crop up and dims the rest of the picture.
  const on = () => focusCrop(i);
  const off = () => focusCrop(null);
  li.addEventListener("mouseenter", on);
  li.addEventListener("mouseleave", off);
  li.addEventListener("focusin", on);
  li.addEventListener("focusout", off);
  return li;
}

function focusCrop(index) {
  el.stage.classList.toggle("crops-focus", index !== null);
  for (const box of el.cropsLayer.children) box.classList.toggle("active", Number(box.dataset.index) === index);
}

/** Each card's little picture: its crop cut from the displayed image (nothing is fetched for it). */
function drawCardPreviews() {
  const job = state.job;
  if (!job || !el.image.complete || !el.image.naturalWidth || el.stage.classList.contains("no-image")) return;
  const kx = el.image.naturalWidth / job.ImageWidth;
  const ky = el.image.naturalHeight / job.ImageHeight;
  for (const canvas of el.cropList.querySelectorAll("canvas")) {
    const c = job.Croppings[Number(canvas.closest(".card").dataset.index)];
    const b = c.Boundary;
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(el.image, b.Left * kx, b.Top * ky, b.Width * kx, b.Height * ky, 0, 0, canvas.width, canvas.height);
  }
}

el.toggleDetections.addEventListener("change", () => {
  el.detectionsLayer.hidden = !el.toggleDetections.checked;
  layout(); // hidden labels measure 0 px: place them again now that they show
});

// ---------------------------------------------------------------- downloads

function filenameOf(resp, output, index) {
  const cd = resp.headers.get("Content-Disposition") || "";
  const star = cd.match(/filename\*\s*=\s*UTF-8''([^;]+)/i);
  if (star) {
    try {
      return decodeURIComponent(star[1].trim());
    } catch {
      /* fall through to the plain name */
    }
  }
  const plain = cd.match(/filename\s*=\s*"?([^";]+)"?/i);
  if (plain) return plain[1].trim();
  const tail = (output?.URI || "").split("/").pop();
  return tail || `crop-${index}.${EXTENSIONS[output?.Format] || "bin"}`;
}

async function download(index, button) {
  const job = state.job;
  if (!job || !state.jobPath) return;
  if (button) button.disabled = true;
  try {
    const resp = await apiFetch(`${state.jobPath}/outputs/${index}`, state.creds);
    const blob = await resp.blob();
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = filenameOf(resp, job.Croppings[index].Output, index);
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 30000);
  } catch (err) {
    showJobError(err instanceof ApiError ? err : new ApiError(0, "Error", String(err.message || err)));
  } finally {
    if (button) button.disabled = false;
  }
}

el.downloadAll.addEventListener("click", async () => {
  el.downloadAll.disabled = true;
  try {
    const crops = state.job?.Croppings || [];
    for (let i = 0; i < crops.length; i++) if (crops[i].Output) await download(i, null);
  } finally {
    el.downloadAll.disabled = false;
  }
});

// ---------------------------------------------------------------- start

buildRatios();
loadCreds();
document.documentElement.dataset.ready = "true";
