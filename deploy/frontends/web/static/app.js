"use strict";

const $ = (id) => document.getElementById(id);
const video = $("video"), track = $("track"), beam = $("beam");
const state = { upload: null, url: null, duration: 0, settings: null, request: 0, recorder: null };

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function setStatus(text) {
  $("status").textContent = text;
}

function seconds(value) {
  return `${value.toFixed(value < 10 ? 2 : 1)} s`;
}

async function loadSettings() {
  try {
    const response = await fetch("api/settings");
    state.settings = await response.json();
    $("file").accept = [...state.settings.extensions, ...state.settings.media_types].join(",");
    const types = state.settings.extensions.map((e) => e.slice(1).toUpperCase()).join(", ");
    $("limits").textContent = `${types}; up to ${(state.settings.max_upload_bytes / 2 ** 20).toFixed(0)} MB. ` +
      "Nothing is kept after the answer.";
    $("live").hidden = !state.settings.live || !navigator.mediaDevices;
  } catch (error) {
    showError(`The page's server does not answer: ${error.message}`);
  }
}

// A clip kept in memory, so a new beam width can be tried on it without choosing it again.
function choose(blob, name) {
  state.upload = { blob, name };
  if (state.url) URL.revokeObjectURL(state.url);
  state.url = URL.createObjectURL(blob);
  video.srcObject = null;
  video.src = state.url;
  $("playback").hidden = true;
  recognise();
}

// Seconds of video that fit the page before the lane scrolls: a longer video is laid out at least this
// many pixels a second, so that its glosses (about half a second each) stay readable; the zoom widens it.
const READABLE_PX_PER_S = 150;
const MIN_TICK_GAP_PX = 80;

function clearResult() {
  $("framing-done").textContent = "";
  track.replaceChildren();
  $("axis").replaceChildren();
  $("timeline").hidden = true;
  $("zoom-control").hidden = true;
  $("sentence").textContent = "";
}

async function recognise() {
  const { blob, name } = state.upload;
  const request = ++state.request;
  clearResult();
  showError("");
  const limit = state.settings && state.settings.max_upload_bytes;
  if (limit && blob.size > limit) {
    // The server refuses it too; checked here so that the upload is not even sent.
    showError(`${name}: the video is larger than the upload limit of ${(limit / 2 ** 20).toFixed(0)} MB`);
    setStatus("");
    document.body.classList.remove("busy");
    return;
  }
  const beamSize = Number(beam.value);
  // The server checks the region too; the page's own pattern only keeps a half-typed one from being sent.
  const query = new URLSearchParams({ beam_size: beamSize, name, framing: $("framing").value,
    region: $("region").validity.valid ? $("region").value.trim() : "" });
  setStatus(`Recognising ${name}…`);
  document.body.classList.add("busy");
  const started = performance.now();
  let answer;
  try {
    const response = await fetch(`api/recognise?${query}`, {
      method: "POST", body: blob, headers: { "Content-Type": blob.type || "application/octet-stream" },
    });
    const text = await response.text();
    try {
      answer = JSON.parse(text);
    } catch {
      answer = { error: text.trim() || `the server answered ${response.status} ${response.statusText}` };
    }
    if (!response.ok && !answer.error) answer = { error: `the server answered ${response.status}` };
  } catch (error) {
    answer = { error: `the upload did not reach the page's server (${error.message})` };
  }
  if (request !== state.request) return; // a newer request replaced this one
  document.body.classList.remove("busy");
  const roundTrip = performance.now() - started;
  if (answer.error) {
    showError(`${name}: ${answer.error}`);
    setStatus("");
    return;
  }
  show(answer, roundTrip);
}

function show(answer, roundTrip) {
  drawGlosses(answer.glosses, [], answer.duration || 1);
  const beamText = answer.beam_size === 0 ? "greedy" : `beam ${answer.beam_size}`;
  setStatus(`${glossCount(answer.glosses)} · ${beamText} · ` +
    `latency ${answer.latency_ms.toFixed(0)} ms (page round trip ${roundTrip.toFixed(0)} ms) · ` +
    `${answer.frames} frames, ${seconds(answer.duration)} at ${answer.fps.toFixed(1)} fps`);
  // What the server did to bring the video to the model: rotation, frame rate, crop.
  $("framing-done").textContent = answer.framing ? `Framing: ${answer.framing.summary}` : "";
  markPlaying(video.currentTime || 0);
}

function glossCount(glosses) {
  return `${glosses.length} gloss${glosses.length === 1 ? "" : "es"}`;
}

// The glosses on the timeline of a video of `duration` seconds: final ones, then tentative ones (marked so).
function drawGlosses(glosses, tentative, duration) {
  state.duration = duration;
  track.replaceChildren();
  for (const [index, item] of [...glosses, ...tentative].entries()) {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = `gloss tone-${index % 6}` + (index >= glosses.length ? " tentative" : "");
    chip.textContent = item.gloss;
    chip.dataset.start = item.start;
    chip.dataset.end = item.end;
    chip.title = `${item.gloss}: ${seconds(item.start)} – ${seconds(item.end)}` +
      (index >= glosses.length ? " (tentative)" : "");
    chip.style.left = `${(100 * item.start) / state.duration}%`;
    chip.style.width = `${(100 * (item.end - item.start)) / state.duration}%`;
    chip.addEventListener("click", () => {
      video.currentTime = item.start;
      markPlaying(item.start);
    });
    track.append(chip);
  }
  const playhead = document.createElement("div");
  playhead.id = "playhead";
  track.append(playhead);
  $("timeline").hidden = false;
  layOut();
  const sentence = $("sentence");
  sentence.replaceChildren(glosses.map((g) => g.gloss).join(" "));
  if (tentative.length) {
    const pending = document.createElement("span");
    pending.className = "tentative";
    pending.textContent = `${glosses.length ? " " : ""}${tentative.map((g) => g.gloss).join(" ")}`;
    sentence.append(pending);
  }
  if (!glosses.length && !tentative.length) sentence.textContent = "(no glosses recognised)";
}

// The lane's width for the video's duration and the zoom (each step of it 2^(1/10) wider), then its time axis.
function layOut() {
  const view = $("timeline").clientWidth || 1;
  const fit = view / state.duration;
  const base = Math.max(fit, READABLE_PX_PER_S);
  const pxPerSecond = base * 2 ** (Number($("zoom").value) / 10);
  $("lane").style.width = `${Math.max(view, pxPerSecond * state.duration)}px`;
  $("zoom-control").hidden = pxPerSecond * state.duration <= view;
  $("zoom-value").textContent = Number($("zoom").value) ? `x${(pxPerSecond / base).toFixed(1)}` : "fit";
  $("axis").replaceChildren();
  drawAxis(state.duration, Math.max(view, pxPerSecond * state.duration) / state.duration);
  markPlaying(video.currentTime || 0);
}

function drawAxis(duration, pxPerSecond) {
  const steps = [0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300];
  const step = steps.find((s) => s * pxPerSecond >= MIN_TICK_GAP_PX) || 600;
  for (let t = 0; t <= duration + 1e-9; t += step) {
    const tick = document.createElement("span");
    tick.textContent = `${Number(t.toFixed(2))} s`;
    tick.style.left = `${(100 * t) / duration}%`;
    $("axis").append(tick);
  }
}

function markPlaying(time) {
  const playhead = $("playhead");
  if (!playhead || !state.duration) return;
  playhead.style.left = `${Math.min(100, (100 * time) / state.duration)}%`;
  // A scrolled lane follows the video: the playhead is kept in view, a third from the left when it moves on.
  const timeline = $("timeline"), x = (timeline.scrollWidth * Math.min(time, state.duration)) / state.duration;
  if (x < timeline.scrollLeft || x > timeline.scrollLeft + timeline.clientWidth) {
    timeline.scrollLeft = x - timeline.clientWidth / 3;
  }
  for (const chip of track.querySelectorAll(".gloss")) {
    chip.classList.toggle("active", time >= Number(chip.dataset.start) && time < Number(chip.dataset.end));
  }
}

// The webcam's stream, or null when it cannot be used (said on the page).
async function webcam() {
  try {
    return await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (error) {
    showError(`The webcam cannot be used: ${error.message}`);
    return null;
  }
}

async function toggleRecording() {
  const button = $("record");
  if (state.recorder) {
    state.recorder.stop();
    return;
  }
  const stream = await webcam();
  if (!stream) return;
  // The server decodes both; VP9 where the browser can encode it, VP8 elsewhere.
  const mimeType = ["video/webm;codecs=vp9", "video/webm;codecs=vp8", "video/webm"]
    .find((type) => MediaRecorder.isTypeSupported(type));
  const recorder = new MediaRecorder(stream, mimeType ? { mimeType } : {});
  const chunks = [];
  const started = performance.now();
  const timer = setInterval(() => {
    button.textContent = `Stop recording (${((performance.now() - started) / 1000).toFixed(0)} s)`;
  }, 250);
  recorder.addEventListener("dataavailable", (event) => event.data.size && chunks.push(event.data));
  recorder.addEventListener("stop", () => {
    clearInterval(timer);
    stream.getTracks().forEach((t) => t.stop());
    state.recorder = null;
    button.textContent = "Record with the webcam";
    button.classList.remove("recording");
    choose(new Blob(chunks, { type: recorder.mimeType || "video/webm" }), "recording.webm");
  });
  state.recorder = recorder;
  clearResult();
  showError("");
  setStatus("Recording…");
  video.removeAttribute("src");
  video.srcObject = stream;
  video.play();
  button.classList.add("recording");
  button.textContent = "Stop recording";
  recorder.start(1000);
}

// Live mode: the webcam's frames, scaled to cover the model's picture, go to the server over a WebSocket as they
// are captured (at most `in_flight` unanswered: a camera frame beyond them is skipped, so a slow server slows the
// page); each window's update shows the final glosses and, marked, the tentative ones after them.
const live = { socket: null, camera: null, ready: null, canvas: document.createElement("canvas"), sent: 0,
  taken: 0, skipped: 0, first: null, final: [], tentative: [], sending: Promise.resolve(), stopping: false,
  answer: null };

async function toggleLive() {
  if (live.socket) {
    stopLive();
    return;
  }
  const camera = await webcam();
  if (!camera) return;
  state.upload = null;
  state.request += 1; // an upload's answer still on its way is not shown over the live one
  clearResult();
  showError("");
  Object.assign(live, { camera, ready: null, sent: 0, taken: 0, skipped: 0, first: null, final: [], tentative: [],
    stopping: false, answer: null });
  video.removeAttribute("src");
  video.srcObject = camera;
  video.play();
  const socket = new WebSocket(new URL("api/live", location.href.replace(/^http/, "ws")));
  live.socket = socket;
  socket.addEventListener("open", () => socket.send(JSON.stringify({
    beam_size: Number(beam.value), framing: $("framing").value })));
  socket.addEventListener("message", (event) => onLive(JSON.parse(event.data)));
  socket.addEventListener("close", () => endLive(socket));
  $("live").textContent = "Stop";
  $("live").classList.add("recording");
  setStatus("Connecting…");
}

function onLive(message) {
  if (message.taken !== undefined) live.taken = message.taken;
  if (message.type === "ready") {
    live.ready = message;
    setStatus("Live: sign to the camera");
    const onFrame = (now, metadata) => {
      if (!live.ready || live.stopping) return;
      sendFrame(metadata);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  } else if (message.type === "update") {
    for (const gloss of message.final) live.final[gloss.index] = gloss;
    live.tentative = message.tentative;
    const elapsed = message.frames / (live.ready.fps || 25);
    drawGlosses(live.final, live.tentative, Math.max(elapsed, 1));
    setStatus(`Live · ${glossCount(live.final)} final, ${live.tentative.length} tentative · ` +
      `${message.received} frames sent, ${message.dropped} dropped by the server, ${live.skipped} skipped here`);
  } else if (message.type === "refused") {
    showError(`A frame was refused: ${message.error}`);
  } else if (message.type === "answer") {
    live.answer = message;
    drawGlosses(message.glosses, [], message.duration || 1);
    const beamText = message.beam_size === 0 ? "greedy" : `beam ${message.beam_size}`;
    setStatus(`${glossCount(message.glosses)} · ${beamText} · live: ${message.received} frames sent ` +
      `(${message.dropped} dropped by the server, ${message.refused} refused, ${live.skipped} skipped here), ` +
      `${seconds(message.duration)} at ${message.fps.toFixed(1)} fps`);
    $("framing-done").textContent = message.framing ? `Framing: ${message.framing.summary}` : "";
  } else if (message.type === "error") {
    showError(message.error);
  }
}

// A camera frame, drawn now and sent once encoded, after the frames before it.
function sendFrame(metadata) {
  const socket = live.socket;
  if (!socket || socket.readyState !== WebSocket.OPEN || live.sent - live.taken >= live.ready.in_flight) {
    live.skipped += 1;
    return;
  }
  const { width, height, aspect } = live.ready;
  const canvas = live.canvas, sourceWidth = video.videoWidth, sourceHeight = video.videoHeight;
  if (!sourceWidth) return;
  // The part the model sees (its training aspect) at least its size; never larger than the camera's picture.
  const scale = Math.min(1, Math.max(width / Math.min(sourceWidth, sourceHeight * aspect),
    height / Math.min(sourceHeight, sourceWidth / aspect)));
  canvas.width = Math.max(2, Math.round(sourceWidth * scale));
  canvas.height = Math.max(2, Math.round(sourceHeight * scale));
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  const captured = metadata.captureTime !== undefined ? metadata.captureTime / 1000 : metadata.mediaTime;
  if (live.first === null) live.first = captured;
  const time = new DataView(new ArrayBuffer(8));
  time.setFloat64(0, captured - live.first, true);
  live.sent += 1;
  const picture = new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
  live.sending = live.sending.then(async () => {
    const blob = await picture;
    if (blob && socket.readyState === WebSocket.OPEN) socket.send(new Blob([time, blob]));
  });
}

function stopLive() {
  live.stopping = true;
  if (live.camera) live.camera.getTracks().forEach((track) => track.stop());
  const socket = live.socket;
  setStatus("Finishing…");
  live.sending.then(() => socket.readyState === WebSocket.OPEN && socket.send(JSON.stringify({ stop: true })));
}

function endLive(socket) {
  if (live.socket !== socket) return;
  if (!live.stopping && !live.answer) showError("The live stream's connection ended.");
  live.stopping = true;
  live.socket = null;
  live.ready = null;
  if (live.camera) live.camera.getTracks().forEach((track) => track.stop());
  $("live").textContent = "Live (webcam)";
  $("live").classList.remove("recording");
}

function init() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) choose(file, file.name);
    event.target.value = ""; // choosing the same file again is a new request
  });
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) choose(file, file.name);
  });
  $("record").addEventListener("click", toggleRecording);
  if (!navigator.mediaDevices || !window.MediaRecorder) $("record").disabled = true;
  $("live").addEventListener("click", toggleLive);
  beam.addEventListener("input", () => {
    $("beam-value").textContent = beam.value === "0" ? "0 (greedy)" : beam.value;
  });
  beam.addEventListener("change", () => state.upload && recognise());
  $("framing").addEventListener("change", () => state.upload && recognise());
  $("region").addEventListener("change", () => state.upload && $("region").validity.valid && recognise());
  video.addEventListener("timeupdate", () => markPlaying(video.currentTime));
  $("zoom").addEventListener("input", () => state.duration && !$("timeline").hidden && layOut());
  window.addEventListener("resize", () => state.duration && !$("timeline").hidden && layOut());
  video.addEventListener("seeked", () => markPlaying(video.currentTime));
  video.addEventListener("error", () => {
    if (state.upload) $("playback").hidden = false;
  });
  loadSettings();
}

init();
