// The dashboard page. It uses only the server's JSON API (docs/dashboard.md) and draws with canvas.
import { barChart, colorFor, formatSeconds, stackedAreaChart } from "./charts.js";

const $ = (id) => document.getElementById(id);
let CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"];
let MAX_UPLOAD_MB = Infinity; // from /api/info; the server enforces it too
const LIVE_WINDOW_S = 60;
const LIVE_MAX_WIDTH = 640;

// ---- helpers ---------------------------------------------------------------------------------

async function api(path, options = {}) {
  const response = await fetch(path, options);
  if (response.status === 204) return null;
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const error = new Error((body && body.detail) || `the server answered ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function setStatus(id, text, isError = false) {
  const element = $(id);
  element.textContent = text;
  element.classList.toggle("error", isError);
}

function percent(value) {
  return `${Math.round(value * 100)}%`;
}

function swatch(name) {
  const span = document.createElement("span");
  span.className = "swatch";
  span.style.background = colorFor(name);
  return span;
}

function cell(row, content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = content;
  row.append(td);
  return td;
}

function studentNumber(face) {
  return Number(face.track_id.replace(/\D/g, "")) || 0;
}

function fillFaceTable(table, faces) {
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const face of [...faces].sort((a, b) => studentNumber(a) - studentNumber(b))) {
    const row = document.createElement("tr");
    cell(row, face.track_id);
    const expression = cell(row, swatch(face.label));
    expression.append(face.label);
    cell(row, percent(face.confidence));
    body.append(row);
  }
}

// Boxes and labels in the canvas's own pixels; `scale` maps analysed-image pixels onto them.
function drawFaces(context, faces, scale = 1) {
  const size = Math.max(11, Math.round(context.canvas.width / 64));
  context.lineWidth = Math.max(2, size / 6);
  context.font = `600 ${size}px system-ui, sans-serif`;
  context.textBaseline = "bottom";
  for (const face of faces) {
    const [x1, y1, x2, y2] = face.box.map((v) => v * scale);
    const color = colorFor(face.label);
    context.strokeStyle = color;
    context.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const text = `${face.track_id} ${face.label} ${percent(face.confidence)}`;
    const width = context.measureText(text).width + 8;
    const top = y1 >= size + 4 ? y1 - size - 4 : y2;
    context.fillStyle = color;
    context.fillRect(x1 - context.lineWidth / 2, top, width, size + 4);
    context.fillStyle = "#111";
    context.fillText(text, x1 + 4, top + size + 2);
  }
}

function countLabels(faces) {
  const counts = Object.fromEntries(CLASSES.map((name) => [name, 0]));
  for (const face of faces) counts[face.label] += 1;
  return counts;
}

// Saves uploading a file the server would refuse anyway.
function tooLarge(file, statusId) {
  if (file.size <= MAX_UPLOAD_MB * 2 ** 20) return false;
  setStatus(statusId, `${file.name} is ${(file.size / 2 ** 20).toFixed(0)} MB; this server accepts up to ${MAX_UPLOAD_MB} MB (option --max-upload-mb).`, true);
  return true;
}

function makeDropZone(zoneId, input, onFile) {
  const zone = $(zoneId);
  input.addEventListener("change", () => input.files.length && onFile(input.files[0]));
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) onFile(event.dataTransfer.files[0]);
  });
}

// ---- tabs ------------------------------------------------------------------------------------

function showTab(name) {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const selected = tab.getAttribute("aria-controls") === name;
    tab.setAttribute("aria-selected", String(selected));
    $(tab.getAttribute("aria-controls")).hidden = !selected;
  }
}

// ---- photo -----------------------------------------------------------------------------------

async function analysePhoto(file) {
  $("photo-result").hidden = true;
  if (tooLarge(file, "photo-status")) return;
  setStatus("photo-status", `Analysing ${file.name}…`);
  const form = new FormData();
  form.append("file", file);
  let result;
  try {
    result = await api("/api/analyze", { method: "POST", body: form });
  } catch (error) {
    setStatus("photo-status", `Could not analyse ${file.name}: ${error.message}`, true);
    return;
  }
  let bitmap = null;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    bitmap = null; // a format the server reads but this browser does not show (e.g. TIFF)
  }
  const canvas = $("photo-canvas");
  canvas.width = result.width;
  canvas.height = result.height;
  const context = canvas.getContext("2d");
  if (bitmap) context.drawImage(bitmap, 0, 0, result.width, result.height);
  else {
    context.fillStyle = "#333";
    context.fillRect(0, 0, result.width, result.height);
  }
  drawFaces(context, result.faces);
  $("photo-caption").textContent = bitmap ? `${result.width} × ${result.height} pixels` : "This browser cannot show this picture format; the boxes are drawn on grey.";
  fillFaceTable($("photo-faces"), result.faces);
  $("photo-result").hidden = false;
  barChart($("photo-chart"), CLASSES, countLabels(result.faces));
  const count = result.faces.length;
  setStatus("photo-status", count ? `${count} face${count === 1 ? "" : "s"} found in ${file.name}.` : `No face found in ${file.name}.`);
}

// ---- video -----------------------------------------------------------------------------------

const video = { jobId: null, timer: null };

function uploadVideo(file) {
  stopPolling();
  $("video-result").hidden = true;
  if (tooLarge(file, "video-status")) return;
  $("video-progress-box").hidden = false;
  $("video-progress").value = 0;
  setStatus("video-status", `Uploading ${file.name}…`);
  const form = new FormData();
  form.append("file", file);
  // XMLHttpRequest, not fetch: it reports upload progress.
  const request = new XMLHttpRequest();
  request.open("POST", "/api/videos");
  request.responseType = "json";
  request.upload.addEventListener("progress", (event) => {
    if (event.lengthComputable) setStatus("video-status", `Uploading ${file.name}: ${percent(event.loaded / event.total)}`);
  });
  request.addEventListener("load", () => {
    const body = request.response || {};
    if (request.status !== 202) {
      $("video-progress-box").hidden = true;
      setStatus("video-status", `Could not analyse ${file.name}: ${body.detail || `the server answered ${request.status}`}`, true);
      return;
    }
    video.jobId = body.id;
    showJob(body);
    pollJob();
  });
  request.addEventListener("error", () => {
    $("video-progress-box").hidden = true;
    setStatus("video-status", `Could not upload ${file.name} (is the file larger than the server's limit?)`, true);
  });
  request.send(form);
}

function stopPolling() {
  clearTimeout(video.timer);
  video.timer = null;
}

async function pollJob() {
  const jobId = video.jobId;
  let job;
  try {
    job = await api(`/api/videos/${jobId}`);
  } catch (error) {
    $("video-progress-box").hidden = true;
    setStatus("video-status", `The video job was lost: ${error.message}`, true);
    return;
  }
  if (jobId !== video.jobId) return;
  showJob(job);
  if (job.status === "queued" || job.status === "running") video.timer = setTimeout(pollJob, 1000);
}

function showJob(job) {
  $("video-progress").value = job.progress;
  if (job.status === "queued") setStatus("video-status", "Waiting for the analyser…");
  else if (job.status === "running") {
    const of = job.duration_s ? ` of ${formatSeconds(job.duration_s)}` : "";
    setStatus("video-status", `Analysing: ${percent(job.progress)} (${formatSeconds(job.video_time_s)}${of}, ${job.frames_done} frames)`);
  } else if (job.status === "failed") {
    $("video-progress-box").hidden = true;
    setStatus("video-status", `The analysis failed: ${job.error}`, true);
  } else if (job.status === "cancelled") {
    $("video-progress-box").hidden = true;
    setStatus("video-status", "Cancelled.");
  } else if (job.status === "done") {
    $("video-progress-box").hidden = true;
    showVideoResult(job);
  }
}

async function cancelVideo() {
  if (!video.jobId) return;
  const jobId = video.jobId;
  video.jobId = null;
  stopPolling();
  $("video-progress-box").hidden = true;
  try {
    await api(`/api/videos/${jobId}`, { method: "DELETE" });
    setStatus("video-status", "Cancelled.");
  } catch (error) {
    setStatus("video-status", `Could not cancel: ${error.message}`, true);
  }
}

function showVideoResult(job) {
  const summary = job.summary;
  $("video-report").href = job.report_url;
  $("video-csv").href = job.csv_url;
  $("video-result").hidden = false;
  stackedAreaChart($("video-timeline"), CLASSES, timelinePoints(summary), { tMin: 0, tMax: job.duration_s || undefined });
  fillStudentTable($("video-students"), summary);
  setStatus("video-status", `Done: ${summaryText(summary)}`);
}

// Summaries come from the server's `summarize` (docs/analysis.md): windows, students, class shares.
function timelinePoints(summary) {
  return summary.windows.filter((window) => window.faces > 0).map((window) => ({
    t: (window.start_s + window.end_s) / 2,
    shares: window.distribution,
  }));
}

function mixBar(shares) {
  const bar = document.createElement("div");
  bar.className = "mix";
  for (const name of CLASSES) {
    if (!shares[name]) continue;
    const part = document.createElement("span");
    part.style.background = colorFor(name);
    part.style.width = percent(shares[name]);
    part.title = `${name} ${percent(shares[name])}`;
    bar.append(part);
  }
  return bar;
}

function fillStudentTable(table, summary) {
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const student of summary.students) {
    const row = document.createElement("tr");
    cell(row, student.track_id);
    cell(row, `${formatSeconds(student.first_s)}–${formatSeconds(student.last_s)} (${student.observations} frames)`);
    const dominant = cell(row, swatch(student.dominant));
    dominant.append(`${student.dominant} ${percent(student.share[student.dominant])}`);
    cell(row, mixBar(student.share));
    body.append(row);
  }
}

function summaryText(summary) {
  const top = CLASSES.reduce((best, name) => (summary.class_distribution[name] > summary.class_distribution[best] ? name : best), CLASSES[0]);
  const students = summary.students.length;
  const mood = summary.faces ? `; most often ${top} (${percent(summary.class_distribution[top])} of faces)` : "";
  return `${summary.faces} faces in ${summary.frames} analysed frames, ${students} student${students === 1 ? "" : "s"} followed${mood}.`;
}

// ---- live ------------------------------------------------------------------------------------

const live = { stream: null, session: null, timer: null, busy: false, sent: 0, points: [] };

async function startLive() {
  $("live-start").disabled = true;
  try {
    live.stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
  } catch (error) {
    $("live-start").disabled = false;
    setStatus("live-status", `The camera could not be opened: ${error.message}`, true);
    return;
  }
  const element = $("live-video");
  element.srcObject = live.stream;
  await element.play();
  $("live-stop").disabled = false;
  setStatus("live-status", "Camera on; analysing…");
  scheduleLive();
}

function scheduleLive() {
  clearInterval(live.timer);
  live.timer = setInterval(sendFrame, 1000 / Number($("live-fps").value));
}

function stopLive() {
  clearInterval(live.timer);
  live.timer = null;
  if (live.stream) for (const track of live.stream.getTracks()) track.stop();
  live.stream = null;
  $("live-video").srcObject = null;
  const overlay = $("live-overlay");
  overlay.getContext("2d").clearRect(0, 0, overlay.width, overlay.height);
  $("live-start").disabled = false;
  $("live-stop").disabled = true;
  setStatus("live-status", `Camera off. ${live.sent} frames analysed in this session.`);
}

async function openSession() {
  live.session = await api("/api/live", { method: "POST" });
  live.points = [];
}

function captureFrame(element) {
  const scale = Math.min(1, LIVE_MAX_WIDTH / element.videoWidth);
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(element.videoWidth * scale);
  canvas.height = Math.round(element.videoHeight * scale);
  canvas.getContext("2d").drawImage(element, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve) => canvas.toBlob((blob) => resolve({ blob, scale }), "image/jpeg", 0.85));
}

// One frame in flight at a time: a slow server lowers the frame rate instead of queueing frames.
async function sendFrame() {
  const element = $("live-video");
  if (live.busy || !live.stream || element.readyState < 2 || !element.videoWidth) return;
  live.busy = true;
  try {
    if (!live.session) await openSession();
    const { blob, scale } = await captureFrame(element);
    const form = new FormData();
    form.append("file", blob, "frame.jpg");
    let result;
    try {
      result = await api(`/api/live/${live.session.id}/frames`, { method: "POST", body: form });
    } catch (error) {
      if (error.status !== 404) throw error;
      await openSession(); // the session expired while idle: start a fresh one
      return;
    }
    live.sent += 1;
    showLiveFrame(element, result, scale);
    $("live-save").disabled = false;
  } catch (error) {
    stopLive();
    setStatus("live-status", `Live analysis stopped: ${error.message}`, true);
  } finally {
    live.busy = false;
  }
}

function showLiveFrame(element, result, scale) {
  if (!live.stream) return; // stopped while the frame was on its way
  const overlay = $("live-overlay");
  overlay.width = element.videoWidth;
  overlay.height = element.videoHeight;
  const context = overlay.getContext("2d");
  context.clearRect(0, 0, overlay.width, overlay.height);
  drawFaces(context, result.faces, 1 / scale);
  overlay.dataset.frames = String(live.sent);
  overlay.dataset.faces = String(result.faces.length);
  fillFaceTable($("live-faces"), result.faces);
  live.points.push({ t: result.time_s, shares: result.mood });
  while (live.points.length && live.points[0].t < result.time_s - LIVE_WINDOW_S) live.points.shift();
  stackedAreaChart($("live-chart"), CLASSES, live.points, { tMin: Math.max(0, result.time_s - LIVE_WINDOW_S), tMax: Math.max(result.time_s, 1) });
  const count = result.faces.length;
  setStatus("live-status", `Live: ${live.sent} frames analysed; ${count} face${count === 1 ? "" : "s"} in the last one.`);
}

async function saveLive() {
  if (!live.session) return;
  $("live-save").disabled = true;
  try {
    const saved = await api(`/api/live/${live.session.id}/save`, { method: "POST" });
    $("live-report").href = saved.report_url;
    $("live-csv").href = saved.csv_url;
    $("live-saved-text").textContent = summaryText(saved.summary);
    $("live-saved").hidden = false;
  } catch (error) {
    setStatus("live-status", `Could not save the session: ${error.message}`, true);
  } finally {
    $("live-save").disabled = false;
  }
}

function endSession() {
  if (live.session) fetch(`/api/live/${live.session.id}`, { method: "DELETE", keepalive: true });
}

// ---- start -----------------------------------------------------------------------------------

async function init() {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.addEventListener("click", () => showTab(tab.getAttribute("aria-controls")));
  }
  makeDropZone("photo-drop", $("photo-file"), analysePhoto);
  makeDropZone("video-drop", $("video-file"), uploadVideo);
  $("video-cancel").addEventListener("click", cancelVideo);
  $("live-start").addEventListener("click", startLive);
  $("live-stop").addEventListener("click", stopLive);
  $("live-save").addEventListener("click", saveLive);
  $("live-fps").addEventListener("change", () => live.timer && scheduleLive());
  window.addEventListener("pagehide", endSession);
  try {
    const info = await api("/api/info");
    CLASSES = info.classes;
    MAX_UPLOAD_MB = info.max_upload_mb;
    $("server-info").textContent = `model: ${info.backend || "?"} · uploads up to ${info.max_upload_mb} MB`;
  } catch (error) {
    $("server-info").textContent = `server not reachable: ${error.message}`;
  }
  document.body.dataset.ready = "true";
}

init();
