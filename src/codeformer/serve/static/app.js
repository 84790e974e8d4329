// The page of `codeformer serve`: pick or drop a photo, move w, compare before/after, download.
// Talks only to this server's /v1/models and /v1/restore; no external scripts.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, beforeUrl: null, resultUrl: null, seq: 0, abort: null, timer: null };

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").style.color = isError ? "#b91c1c" : "";
}

async function loadModel() {
  try {
    const res = await fetch("/v1/models");
    const body = await res.json();
    const m = body.models[0];
    $("model").textContent = `model: ${m.id}` + (m.runtime ? ` (${m.runtime})` : "");
  } catch (err) {
    $("model").textContent = "model: unavailable";
  }
}

function pickFile(file) {
  if (!file) return;
  state.file = file;
  if (state.beforeUrl) URL.revokeObjectURL(state.beforeUrl);
  state.beforeUrl = URL.createObjectURL(file);
  $("before").src = state.beforeUrl;
  $("viewer").hidden = false;
  restore();
}

function scheduleRestore() {
  clearTimeout(state.timer);
  state.timer = setTimeout(restore, 200);
}

async function restore() {
  if (!state.file) return;
  const seq = ++state.seq;
  if (state.abort) state.abort.abort();
  state.abort = new AbortController();
  const w = $("w").value;
  const form = new FormData();
  form.append("image", state.file, state.file.name || "image");
  form.append("w", w);
  form.append("upscale", $("upscale").value);
  form.append("faces", $("faces").value);
  form.append("aligned", $("aligned").checked ? "true" : "false");
  setStatus(`restoring at w = ${Number(w).toFixed(2)} …`);
  document.body.dataset.state = "busy";
  let body;
  try {
    const res = await fetch("/v1/restore", { method: "POST", body: form, signal: state.abort.signal,
                                             headers: { Accept: "application/json" } });
    body = await res.json();
    if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
  } catch (err) {
    if (err.name === "AbortError") return;
    if (seq === state.seq) {
      setStatus(`error: ${err.message}`, true);
      document.body.dataset.state = "error";
    }
    return;
  }
  if (seq !== state.seq) return; // a newer request is on its way
  showResult(body, w);
}

function showResult(body, w) {
  const bytes = Uint8Array.from(atob(body.image), (c) => c.charCodeAt(0));
  if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
  state.resultUrl = URL.createObjectURL(new Blob([bytes], { type: body.media_type }));
  const after = $("after");
  after.onload = () => {
    after.dataset.w = w;
    document.body.dataset.state = "done";
  };
  after.src = state.resultUrl;
  const ext = body.media_type.split("/")[1].replace("jpeg", "jpg");
  const base = (state.file.name || "image").replace(/\.[^.]*$/, "");
  const link = $("download");
  link.href = state.resultUrl;
  link.download = `${base}_restored_w${Number(w).toFixed(2)}.${ext}`;
  link.classList.remove("disabled");
  drawFaces(body);
  const t = body.timings || {};
  $("timings").textContent = Object.keys(t).map((k) => `${k} ${(t[k] * 1000).toFixed(0)} ms`).join(" · ");
  const n = body.faces.length;
  setStatus(`${n} face${n === 1 ? "" : "s"} restored at w = ${Number(w).toFixed(2)}` +
            (body.notes && body.notes.length ? ` (${body.notes.join("; ")})` : ""));
}

function drawFaces(body) {
  const inW = body.width / body.options.upscale;
  const inH = body.height / body.options.upscale;
  const boxes = $("boxes");
  const rows = $("faces-table");
  boxes.replaceChildren();
  rows.replaceChildren();
  body.faces.forEach((f, i) => {
    const [x0, y0, x1, y1] = f.box;
    const div = document.createElement("div");
    div.className = "box";
    Object.assign(div.style, { left: `${(100 * x0) / inW}%`, top: `${(100 * y0) / inH}%`,
                               width: `${(100 * (x1 - x0)) / inW}%`, height: `${(100 * (y1 - y0)) / inH}%` });
    const label = document.createElement("b");
    label.textContent = String(i + 1);
    div.append(label);
    boxes.append(div);
    const tr = document.createElement("tr");
    for (const v of [i + 1, f.box.map((b) => b.toFixed(0)).join(", "), `${f.face_size.toFixed(0)} px`,
                     f.score.toFixed(2), f.w]) {
      const td = document.createElement("td");
      td.textContent = String(v);
      tr.append(td);
    }
    rows.append(tr);
  });
  $("report").hidden = false;
}

function setDivider(fraction) {
  const pct = Math.min(100, Math.max(0, fraction * 100));
  $("divider").style.left = `${pct}%`;
  $("divider").setAttribute("aria-valuenow", pct.toFixed(0));
  $("after-clip").style.clipPath = `inset(0 0 0 ${pct}%)`;
}

function setupDivider() {
  const box = $("compare");
  let dragging = false;
  const move = (ev) => {
    const r = box.getBoundingClientRect();
    setDivider((ev.clientX - r.left) / r.width);
  };
  box.addEventListener("pointerdown", (ev) => {
    ev.preventDefault(); // no native image drag, which would cancel the pointer stream
    dragging = true;
    box.setPointerCapture(ev.pointerId);
    move(ev);
  });
  box.addEventListener("pointermove", (ev) => dragging && move(ev));
  for (const name of ["pointerup", "pointercancel"]) box.addEventListener(name, () => { dragging = false; });
  $("divider").addEventListener("keydown", (ev) => {
    const now = Number($("divider").getAttribute("aria-valuenow")) / 100;
    if (ev.key === "ArrowLeft") setDivider(now - 0.05);
    if (ev.key === "ArrowRight") setDivider(now + 0.05);
  });
}

function setupInputs() {
  const drop = $("drop");
  $("file").addEventListener("change", (ev) => pickFile(ev.target.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, (ev) => { ev.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (ev) => pickFile(ev.dataTransfer.files[0]));
  $("w").addEventListener("input", () => {
    $("w-value").textContent = Number($("w").value).toFixed(2);
    scheduleRestore();
  });
  for (const id of ["upscale", "faces", "aligned"]) $(id).addEventListener("change", restore);
}

setupInputs();
setupDivider();
loadModel();
