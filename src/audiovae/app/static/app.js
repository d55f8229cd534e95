// The audiovae page: plain DOM code over the JSON API (/docs describes it).
"use strict";

const $ = (id) => document.getElementById(id);
const wavUrl = (b64) => "data:audio/wav;base64," + b64;
const pngUrl = (b64) => "data:image/png;base64," + b64;
const fmt = (v, digits = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
let info = null;
let recorded = null; // a WAV File made from the microphone, used when no file is chosen

async function call(path, options = {}) {
  const r = await fetch(path, options);
  const body = await r.json();
  if (!r.ok) {
    const d = body.detail;
    throw new Error(typeof d === "string" ? d : (d || []).map((e) => `${e.loc.slice(-1)}: ${e.msg}`).join("; "));
  }
  return body;
}

function status(id, text, error = false) {
  $(id).textContent = text;
  $(id).classList.toggle("error", error);
}

async function busy(id, work) {
  status(id, "working…");
  try {
    await work();
    status(id, "done");
  } catch (e) {
    status(id, e.message, true);
  }
}

function form(fields) {
  const f = new FormData();
  for (const [k, v] of Object.entries(fields)) {
    for (const item of Array.isArray(v) ? v : [v]) f.append(k, item);
  }
  return f;
}

// Tabs
document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => {
  document.querySelectorAll(".tab, .panel").forEach((e) => e.classList.remove("active"));
  b.classList.add("active");
  $(b.dataset.tab).classList.add("active");
}));

// Dropping files onto a .drop label fills its input
document.querySelectorAll(".drop").forEach((zone) => {
  const input = zone.querySelector("input");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    input.files = e.dataTransfer.files;
    input.dispatchEvent(new Event("change"));
  });
});

// Recording: MediaRecorder -> decodeAudioData -> 16-bit mono WAV, which every server decoder reads
function encodeWav(buffer) {
  const n = buffer.length, rate = buffer.sampleRate, out = new DataView(new ArrayBuffer(44 + 2 * n));
  const mono = new Float32Array(n);
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    buffer.getChannelData(c).forEach((v, i) => { mono[i] += v / buffer.numberOfChannels; });
  }
  const text = (at, s) => [...s].forEach((ch, i) => out.setUint8(at + i, ch.charCodeAt(0)));
  text(0, "RIFF"); out.setUint32(4, 36 + 2 * n, true); text(8, "WAVEfmt ");
  out.setUint32(16, 16, true); out.setUint16(20, 1, true); out.setUint16(22, 1, true);
  out.setUint32(24, rate, true); out.setUint32(28, 2 * rate, true); out.setUint16(32, 2, true);
  out.setUint16(34, 16, true); text(36, "data"); out.setUint32(40, 2 * n, true);
  mono.forEach((v, i) => out.setInt16(44 + 2 * i, Math.max(-1, Math.min(1, v)) * 32767, true));
  return new File([out], "recording.wav", { type: "audio/wav" });
}

let recorder = null;
$("codec-record").addEventListener("click", async () => {
  if (recorder) { recorder.stop(); return; }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (e) => chunks.push(e.data);
    recorder.onstop = async () => {
      stream.getTracks().forEach((t) => t.stop());
      recorder = null;
      $("codec-record").textContent = "Record";
      const raw = await new Blob(chunks).arrayBuffer();
      recorded = encodeWav(await new AudioContext().decodeAudioData(raw));
      $("codec-file").value = "";
      status("codec-status", "recorded; press Compress");
    };
    recorder.start();
    $("codec-record").textContent = "Stop";
    status("codec-status", "recording…");
  } catch (e) {
    status("codec-status", "cannot record: " + e.message, true);
  }
});

// Codec
function scoreRow(name, r, m) {
  const cells = [name, fmt(r.kbps), r.bytes, r.size_ratio ? fmt(r.size_ratio, 1) + "×" : "–",
    fmt(m.pesq), fmt(m.stoi, 3), fmt(m.si_sdr, 1), fmt(m.mel_distance, 3)];
  const tr = document.createElement("tr");
  cells.forEach((c) => { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); });
  return tr;
}

$("codec-run").addEventListener("click", () => busy("codec-status", async () => {
  const file = $("codec-file").files[0] || recorded;
  if (!file) throw new Error("choose or record a clip first");
  const r = await call("/api/codec", { method: "POST",
    body: form({ file, model: $("codec-model").value, kbps: $("codec-kbps").value }) });
  const body = $("codec-numbers").querySelector("tbody");
  const extended = r.extension_kbps ? `, band up to ${fmt(r.sample_rate / 2000, 1)} kHz by bandwidth extension: `
    + `${fmt(r.extension_kbps, 2)} kbps of it` : "";
  body.replaceChildren(scoreRow(`audiovae ${r.model} (quality ${r.quality}${extended})`, r, r.metrics));
  if (r.opus) body.appendChild(scoreRow(`Opus (asked ${r.opus.target_kbps} kbps)`, r.opus, r.opus.metrics));
  $("codec-original").src = wavUrl(r.original_wav);
  $("codec-decoded").src = wavUrl(r.decoded_wav);
  $("codec-opus-player").hidden = $("codec-spec-opus").hidden = !r.opus;
  if (r.opus) {
    $("codec-opus").src = wavUrl(r.opus.wav);
    $("codec-spec-opus").src = pngUrl(r.opus.spectrogram);
  }
  for (const k of ["original", "decoded", "difference"]) $("codec-spec-" + k).src = pngUrl(r.spectrograms[k]);
  const stem = file.name.replace(/\.[^.]*$/, "");
  Object.assign($("codec-download-avae"), { href: "data:application/octet-stream;base64," + r.avae,
    download: `${stem}_${r.target_kbps}kbps.avae` });
  Object.assign($("codec-download-wav"), { href: wavUrl(r.decoded_wav), download: `${stem}_${r.target_kbps}kbps.wav` });
  $("codec-results").hidden = false;
}));

// A/B: one button switches between original and decoded at the same position
$("codec-ab").addEventListener("click", () => {
  const a = $("codec-original"), b = $("codec-decoded");
  const [from, to, label] = !b.paused ? [b, a, "A/B: play B"] : !a.paused ? [a, b, "A/B: play A"] : [null, a, "A/B: play B"];
  if (from) { to.currentTime = from.currentTime; from.pause(); }
  to.play();
  $("codec-ab").textContent = label;
});

// Classify
$("classify-run").addEventListener("click", () => busy("classify-status", async () => {
  const files = [...$("classify-files").files];
  if (!files.length) throw new Error("choose or drop clips first");
  const preds = await call("/api/classify", { method: "POST",
    body: form({ files, classifier: $("classify-model").value }) });
  $("classify-results").replaceChildren(...preds.map((p) => {
    const div = document.createElement("div");
    div.className = "clip";
    const h = document.createElement("strong");
    h.textContent = p.name;
    div.appendChild(h);
    for (const l of p.labels) {
      const line = document.createElement("div");
      line.className = "prediction";
      line.innerHTML = `<span class="bar" style="width:${Math.round(200 * l.probability)}px"></span>`;
      line.append(`${l.label} ${(100 * l.probability).toFixed(1)} %`);
      div.appendChild(line);
    }
    return div;
  }));
}));

// Generate
async function loadLabels() {
  const select = $("gen-label");
  select.replaceChildren(new Option("any", ""));
  $("gen-run").disabled = true;
  try {
    const g = await call("/api/generate/info?model=" + encodeURIComponent($("gen-model").value));
    g.labels.forEach((l) => select.appendChild(new Option(l, l)));
    $("gen-run").disabled = false;
    status("gen-status", "");
  } catch (e) {
    status("gen-status", "generation is unavailable: " + e.message, true);
  }
}
$("gen-model").addEventListener("change", loadLabels);

$("gen-run").addEventListener("click", () => busy("gen-status", async () => {
  const r = await call("/api/generate", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model: $("gen-model").value, label: $("gen-label").value || null,
      seconds: Number($("gen-seconds").value), temperature: Number($("gen-temperature").value),
      seed: Number($("gen-seed").value) }) });
  $("gen-audio").src = $("gen-download").href = wavUrl(r.wav);
  $("gen-spec").src = pngUrl(r.spectrogram);
  $("gen-results").hidden = false;
}));

let interpolation = [];
function showStep() {
  const i = Number($("interp-slider").value);
  $("interp-pos").textContent = `${i + 1} / ${interpolation.length}`;
  $("interp-audio").src = wavUrl(interpolation[i]);
}
$("interp-slider").addEventListener("input", showStep);
$("interp-run").addEventListener("click", () => busy("interp-status", async () => {
  const [a, b] = [$("interp-a").files[0], $("interp-b").files[0]];
  if (!a || !b) throw new Error("choose two clips");
  const r = await call("/api/interpolate", { method: "POST",
    body: form({ file_a: a, file_b: b, model: $("gen-model").value, steps: $("interp-steps").value }) });
  interpolation = r.wavs;
  Object.assign($("interp-slider"), { max: r.wavs.length - 1, value: 0 });
  showStep();
  $("interp-results").hidden = false;
}));

// Latent map
const COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
  "#9c755f", "#bab0ac"];

function drawMap(m, play) {
  const svg = $("map-svg"), ns = "http://www.w3.org/2000/svg", W = 640, H = 420, pad = 20;
  const xs = m.points.map((p) => p.x), ys = m.points.map((p) => p.y);
  const sx = (v) => pad + (W - 2 * pad) * (v - Math.min(...xs)) / ((Math.max(...xs) - Math.min(...xs)) || 1);
  const sy = (v) => H - pad - (H - 2 * pad) * (v - Math.min(...ys)) / ((Math.max(...ys) - Math.min(...ys)) || 1);
  const labels = [...new Set(m.points.map((p) => p.label))].sort();
  const color = (l) => (labels.length <= COLORS.length ? COLORS[labels.indexOf(l)]
    : `hsl(${Math.round(360 * labels.indexOf(l) / labels.length)}, 65%, ${labels.indexOf(l) % 2 ? 40 : 60}%)`);
  svg.replaceChildren();
  m.points.forEach((p, i) => {
    const c = document.createElementNS(ns, "circle");
    Object.entries({ cx: sx(p.x), cy: sy(p.y), r: 6, fill: color(p.label), "data-index": i })
      .forEach(([k, v]) => c.setAttribute(k, v));
    const title = document.createElementNS(ns, "title");
    title.textContent = `${p.name} (${p.label})`;
    c.appendChild(title);
    c.addEventListener("click", () => {
      svg.querySelectorAll(".playing").forEach((e) => e.classList.remove("playing"));
      c.classList.add("playing");
      $("map-now").textContent = title.textContent;
      $("map-audio").src = play(i);
      $("map-audio").play().catch(() => {});
    });
    svg.appendChild(c);
  });
  svg.removeAttribute("hidden"); // an SVG element has no .hidden property
  $("map-legend").innerHTML = labels.map((l) => `<span><i style="background:${color(l)}"></i></span>`).join("");
  $("map-legend").querySelectorAll("span").forEach((s, i) => s.append(labels[i]));
  status("map-status", `${m.points.length} clips; PCA explains ` +
    `${(100 * (m.explained_variance[0] + m.explained_variance[1])).toFixed(0)} % of the variance`);
}

$("map-server").addEventListener("click", async () => {
  status("map-status", "embedding the server's clips…");
  try {
    const m = await call("/api/latent-map?model=" + encodeURIComponent($("map-model").value));
    drawMap(m, (i) => "/api/latent-map/clip?index=" + i);
  } catch (e) { status("map-status", e.message, true); }
});

$("map-upload").addEventListener("click", async () => {
  const files = [...$("map-files").files, ...$("map-folder").files].filter((f) => !f.name.startsWith("."));
  if (files.length < 2) { status("map-status", "choose at least two clips", true); return; }
  const labels = files.map((f) => (f.webkitRelativePath || "").split("/").slice(-2, -1)[0] || "upload");
  status("map-status", "embedding…");
  try {
    const m = await call("/api/latent-map", { method: "POST",
      body: form({ files, labels, model: $("map-model").value }) });
    const urls = files.map((f) => URL.createObjectURL(f));
    drawMap(m, (i) => urls[i]);
  } catch (e) { status("map-status", e.message, true); }
});

// Start: fill the selects from /api/info
(async () => {
  try {
    info = await call("/api/info");
  } catch (e) {
    status("codec-status", e.message, true);
    return;
  }
  document.querySelectorAll("select.models").forEach((s) => info.models.forEach((m) => s.appendChild(new Option(m, m))));
  info.classifiers.forEach((c) => $("classify-model").appendChild(new Option(c, c)));
  $("map-server").hidden = !info.latent_clips;
  if (info.generate) loadLabels();
  else {
    status("gen-status", "generation is unavailable in this installation (no audiovae.generate module)", true);
    $("gen-run").disabled = $("interp-run").disabled = true;
  }
  document.body.dataset.ready = "1";
})();
