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
  state.duration = answer.duration || 1;
  const glosses = answer.glosses;
  for (const [index, item] of glosses.entries()) {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = `gloss tone-${index % 6}`;
    chip.textContent = item.gloss;
    chip.dataset.start = item.start;
    chip.dataset.end = item.end;
    chip.title = `${item.gloss}: ${seconds(item.start)} – ${seconds(item.end)}`;
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
  $("sentence").textContent = glosses.length ? glosses.map((g) => g.gloss).join(" ") : "(no glosses recognised)";
  const beamText = answer.beam_size === 0 ? "greedy" : `beam ${answer.beam_size}`;
  setStatus(`${glosses.length} gloss${glosses.length === 1 ? "" : "es"} · ${beamText} · ` +
    `latency ${answer.latency_ms.toFixed(0)} ms (page round trip ${roundTrip.toFixed(0)} ms) · ` +
    `${answer.frames} frames, ${seconds(answer.duration)} at ${answer.fps.toFixed(1)} fps`);
  // What the server did to bring the video to the model: rotation, frame rate, crop.
  $("framing-done").textContent = answer.framing ? `Framing: ${answer.framing.summary}` : "";
  markPlaying(video.currentTime || 0);
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

async function toggleRecording() {
  const button = $("record");
  if (state.recorder) {
    state.recorder.stop();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (error) {
    showError(`The webcam cannot be used: ${error.message}`);
    return;
  }
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
