// The voxwire demo page: speak a text or stream it as it is typed, hear it at
// once, and watch what the stream does. See docs/demo.md.

import { VoiceCloner } from "./clone.js";
import { Highlighter } from "./highlight.js";
import { Player, webCodecsOpus } from "./player.js";
import { api, httpProblem, VoxwireSocket } from "./stream.js";

const $ = (id) => document.getElementById(id);
const els = {
  text: $("text"),
  backdrop: $("backdrop"),
  speak: $("speak"),
  type: $("type-mode"),
  stop: $("stop"),
  hint: $("hint"),
  alert: $("alert"),
  engine: $("engine"),
  voice: $("voice"),
  output: $("output"),
  speed: $("speed"),
  speedValue: $("speed-value"),
  codecNote: $("codec-note"),
  status: $("status"),
  scope: $("scope"),
  level: $("level"),
  now: $("now-speaking"),
};

// Typing mode: a pause this long speaks what was typed even without a full stop.
const TYPE_PAUSE_MS = 900;

/** Playback statistics, published for people (the panel) and tests (window). */
const stats = {
  state: "idle", // idle | connecting | buffering | playing | stopped | error
  decoder: "", // webcodecs-opus | pcm
  encoding: "",
  sampleRate: 0, // AudioContext rate
  bitrate: null, // the server's ready.output.bitrate
  measuredKbps: null,
  framesReceived: 0,
  framesDropped: 0, // arrived after Stop, before `cancelled`
  bytesReceived: 0,
  framesDecoded: 0,
  samplesPlayed: 0,
  nonSilentSamples: 0,
  underruns: 0,
  underrunEvents: [], // {afterStartMs}: how far into the utterance it happened
  waits: 0, // ran dry while waiting for the typist (not an underrun)
  bufferMs: 0,
  targetMs: 0,
  utterances: 0,
  requestAt: null, // performance.now() of the Speak click or first keystroke
  firstFrameAt: null,
  firstAudioAt: null, // when the first sample is heard (AudioContext output time)
  ttfaMs: null,
  lastInputAt: null, // performance.now() of the latest keystroke in the text
  stopClickAt: null,
  stopLatencyMs: null, // Stop click to silent output
  stopRenderMs: null, // Stop click to the worklet's silent quantum reaching this thread
  segment: null, // {index, text} being heard
  segments: 0,
  flushed: 0,
  cancelled: 0,
  errors: [],
};
window.voxwireStats = stats;

const player = new Player({ onMessage: onWorklet });
const highlighter = new Highlighter(els.text, els.backdrop);
let opusOk = false;
let engines = { default: "", engines: [] };
let voices = { default: "", voices: [] };

let sock = null; // the open session
let current = null; // the socket being opened or open; events of others are stale
let opening = null;
let sockKey = "";
let segmentsById = []; // [{index, text, first_frame}] of the current utterance, in order
let utterance = null; // {mode, requestAt, firstAudioAt}
let pendingFlushes = 0;
let awaitingCancelled = false;
let pendingStop = null;
let typeMode = false;
let typing = false; // typed text sent since the last flush
let sent = ""; // the textarea prefix already sent in typing mode
let pauseTimer = 0;
let sessionBytes = 0; // for the measured bitrate of the current session
let sessionFrames = 0;

// ------------------------------------------------------------------ messages

function say(text) {
  els.hint.textContent = text;
}

function alertUser(text) {
  stats.errors.push(text);
  els.alert.textContent = text;
  els.alert.hidden = false;
}

function clearAlert() {
  els.alert.hidden = true;
  els.alert.textContent = "";
}

function setState(s) {
  stats.state = s;
  els.status.dataset.state = s;
  els.status.textContent = {
    idle: "Ready",
    connecting: "Connecting…",
    buffering: "Buffering…",
    waiting: "Waiting for text",
    playing: "Playing",
    stopped: "Stopped",
    error: "Error",
  }[s];
}

// ------------------------------------------------------------------ settings

function option(value, label) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = label;
  return o;
}

function fillVoices() {
  const engine = els.engine.value;
  const info = engines.engines.find((e) => e.name === engine);
  const list = voices.voices.filter((v) => v.engine === engine);
  const fallback = engine === engines.default ? voices.default : info && info.default_voice;
  const keep = els.voice.value;
  els.voice.replaceChildren(
    ...list.map((v) =>
      option(v.id, `${v.name || v.id} (${v.language}${v.builtin === false ? ", cloned" : ""})`),
    ),
  );
  els.voice.value = list.some((v) => v.id === keep) ? keep : fallback;
}

async function loadVoices() {
  const res = await fetch(api("/v1/voices"));
  if (!res.ok) throw new Error(await httpProblem(res));
  voices = await res.json();
  fillVoices();
  cloner.configure(voices.upload);
}

async function loadSettings() {
  try {
    const res = await fetch(api("/v1/engines"));
    if (!res.ok) throw new Error(await httpProblem(res));
    engines = await res.json();
    els.engine.replaceChildren(...engines.engines.map((e) => option(e.name, e.name)));
    els.engine.value = engines.default;
    await loadVoices();
  } catch (e) {
    alertUser(`Could not load the engine and voice lists: ${e.message}.`);
  }
}

function outputFormat() {
  const [encoding, rate] = els.output.value.split(":");
  if (encoding === "opus") {
    return { encoding: "opus", sample_rate: 48000, frame_ms: 20, bitrate: Number(rate) };
  }
  // PCM at the AudioContext's own rate needs no resampling (the server allows 8–48 kHz).
  const sr = player.sampleRate;
  return { encoding: "pcm_s16le", sample_rate: sr >= 8000 && sr <= 48000 ? sr : 48000, frame_ms: 20 };
}

function startMessage() {
  const start = { type: "start", output: outputFormat() };
  if (els.engine.value) start.engine = els.engine.value;
  if (els.voice.value) start.voice = els.voice.value;
  const speed = Number(els.speed.value);
  if (speed !== 1) start.speed = speed;
  return start;
}

// ------------------------------------------------------------------ session

async function session() {
  const start = startMessage();
  const key = JSON.stringify(start);
  if (sock && sock.isOpen && sockKey === key) return sock;
  if (opening && sockKey === key) return opening;
  // Settings changed (or the session ended): a new session replaces the old one.
  if (current) current.close();
  sock = null;
  sockKey = key;
  // A cancel sent on the old session is answered there, never here.
  awaitingCancelled = false;
  pendingFlushes = 0;
  const s = new VoxwireSocket(start, {
    frame: (buf, n) => s === current && onFrame(buf, n),
    event: (ev) => s === current && onEvent(ev),
    close: (code, reason) => s === current && onClose(code, reason),
  });
  current = s;
  const p = s.open().then(
    (ready) => {
      if (opening === p) opening = null;
      if (s !== current) throw new Error("the settings changed while connecting; try again");
      sock = s;
      sessionBytes = 0;
      sessionFrames = 0;
      stats.measuredKbps = null;
      player.setFormat(ready.output);
      stats.encoding = ready.output.encoding;
      stats.bitrate = ready.output.bitrate ?? null;
      return s;
    },
    (err) => {
      if (opening === p) opening = null;
      sockKey = "";
      throw err;
    },
  );
  opening = p;
  return p;
}

function onFrame(buf, n) {
  stats.framesReceived += 1;
  stats.bytesReceived += buf.byteLength;
  sessionFrames += 1;
  sessionBytes += buf.byteLength;
  if (awaitingCancelled) {
    stats.framesDropped += 1; // sent before the server saw our cancel
    return;
  }
  if (stats.firstFrameAt === null) stats.firstFrameAt = performance.now();
  player.pushPacket(buf, n);
}

function onEvent(ev) {
  switch (ev.type) {
    case "segment":
      if (awaitingCancelled) return;
      segmentsById.push(ev);
      stats.segments += 1;
      highlighter.add(ev.index, ev.text);
      break;
    case "flushed":
      if (awaitingCancelled) return;
      stats.flushed += 1;
      pendingFlushes = Math.max(0, pendingFlushes - 1);
      if (pendingFlushes === 0 && !typing) player.end();
      break;
    case "cancelled":
      stats.cancelled += 1;
      awaitingCancelled = false;
      break;
    case "done":
      player.end();
      break;
    case "error":
      if (ev.code === "idle_timeout") {
        say("The connection was idle and closed; the next request reconnects.");
      } else {
        alertUser(`${ev.message} (${ev.code})`);
      }
      break;
  }
}

function onClose(code, reason) {
  sock = null;
  sockKey = "";
  const wasBusy = ["playing", "buffering", "waiting"].includes(stats.state);
  if (code !== 1000 && code !== 1008 && wasBusy) {
    alertUser(`The connection closed unexpectedly (code ${code}${reason ? `: ${reason}` : ""}).`);
  }
  if (pendingFlushes > 0 || typing) {
    pendingFlushes = 0;
    typing = false;
    player.end(); // nothing more will come: play what arrived
  }
  awaitingCancelled = false;
}

// ------------------------------------------------------------------ playback

function onWorklet(m) {
  switch (m.type) {
    case "stats": {
      const sr = player.sampleRate;
      stats.samplesPlayed = m.samplesPlayed;
      stats.nonSilentSamples = m.nonSilentSamples;
      stats.underruns = m.underruns;
      stats.waits = m.waits;
      stats.bufferMs = Math.round((m.bufferedSamples / sr) * 1000);
      stats.targetMs = Math.round((m.targetSamples / sr) * 1000);
      stats.framesDecoded = player.framesDecoded;
      // Until the worklet confirms a Stop, its reports predate it: keep "stopped".
      if (pendingStop) {
        renderStats();
        break;
      }
      if (m.state === "playing") setState("playing");
      else if (m.state === "buffering" && stats.state !== "connecting") {
        // In typing mode an empty buffer usually means the typist is ahead of us.
        setState(typeMode && !pendingFlushes ? "waiting" : "buffering");
      }
      showSegment(m.frame, m.state);
      renderStats();
      break;
    }
    case "started":
      if (utterance && utterance.firstAudioAt === null) {
        utterance.firstAudioAt = player.contextToPerformance(m.time);
        stats.firstAudioAt = utterance.firstAudioAt;
        stats.ttfaMs = Math.round(utterance.firstAudioAt - utterance.requestAt);
      }
      if (!pendingStop) setState("playing");
      break;
    case "underrun":
      stats.underrunEvents.push({ afterStartMs: Math.round(m.afterStartMs) });
      break;
    case "drained":
      if (["playing", "buffering", "waiting"].includes(stats.state)) setState("idle");
      showSegment(-1, "idle");
      break;
    case "silenced":
      if (pendingStop && m.id === pendingStop.id) {
        stats.stopLatencyMs = Math.round(player.contextToPerformance(m.time) - pendingStop.at);
        stats.stopRenderMs = Math.round(performance.now() - pendingStop.at);
        pendingStop = null;
      }
      showSegment(-1, "idle");
      renderStats();
      break;
    case "decode-error":
      alertUser(`The browser could not decode the audio: ${m.message}`);
      break;
  }
}

function showSegment(frame, state) {
  let seg = null;
  if (state === "playing" && frame >= 0) {
    for (const s of segmentsById) if (s.first_frame <= frame) seg = s;
  }
  stats.segment = seg ? { index: seg.index, text: seg.text } : null;
  const now = seg ? seg.text : "";
  if (els.now.textContent !== now) els.now.textContent = now;
  highlighter.show(seg ? seg.index : null);
}

function beginUtterance(mode, at) {
  utterance = { mode, requestAt: at, firstAudioAt: null };
  stats.utterances += 1;
  stats.requestAt = at;
  stats.firstAudioAt = null;
  stats.ttfaMs = null;
  segmentsById = [];
}

/** Barge-in: cancel on the server, silence the worklet now. */
function interrupt(at) {
  if (sock && sock.isOpen) {
    sock.send({ type: "cancel" });
    awaitingCancelled = true;
  }
  const id = player.flush(sock ? sock.frames : 0);
  pendingStop = id ? { id, at } : null;
  stats.stopClickAt = at;
  pendingFlushes = 0;
  typing = false;
  clearTimeout(pauseTimer);
  segmentsById = [];
  highlighter.show(null);
}

async function speak(at) {
  const text = els.text.value;
  if (!text.trim()) {
    say("Type something to speak first.");
    els.text.focus();
    return;
  }
  // Anything playing, owed, or typed but not yet flushed on the server would
  // otherwise come before this text: cancel it first.
  const busy =
    typing || pendingFlushes > 0 || ["playing", "buffering", "waiting"].includes(stats.state);
  if (typeMode) setTypeMode(false, false);
  clearAlert();
  try {
    await player.ensure();
    stats.sampleRate = player.sampleRate;
    if (busy) interrupt(at);
    setState("connecting");
    const s = await session();
    beginUtterance("speak", at);
    highlighter.reset(0);
    player.begin(true);
    s.sendText(text);
    s.send({ type: "flush" });
    pendingFlushes += 1;
  } catch (e) {
    setState("error");
    alertUser(`Could not start speaking: ${e.message}`);
  }
}

function stop(at) {
  interrupt(at);
  if (typeMode) {
    sent = els.text.value; // typed text so far stays unspoken
    highlighter.reset(sent.length);
  }
  setState("stopped");
  say("Stopped. Speak again, or keep typing in typing mode.");
}

// ------------------------------------------------------------------ typing mode

function setTypeMode(on, flushRest = true) {
  if (typeMode && !on && flushRest) sendTyped(true);
  typeMode = on;
  els.type.setAttribute("aria-pressed", String(on));
  els.type.classList.toggle("active", on);
  if (on) {
    sent = els.text.value; // text already there is not spoken; new typing is
    highlighter.reset(sent.length);
    say("Typing mode: speech follows as you type. A short pause speaks the rest.");
    els.text.focus();
    els.text.setSelectionRange(sent.length, sent.length);
    player
      .ensure()
      .then(() => {
        stats.sampleRate = player.sampleRate;
      })
      .catch((e) => alertUser(`Audio could not start: ${e.message}`));
    session().catch((e) => alertUser(`Could not connect: ${e.message}`));
  } else {
    say("Press Speak to hear the text, or turn on typing mode.");
  }
}

/** Send what was typed since the last call. The word being typed is held back
 * until a space or punctuation ends it (or `all`), so backspacing inside it
 * never reaches the server. */
function sendTyped(all) {
  if (!sock || !sock.isOpen) return;
  const value = els.text.value;
  if (!value.startsWith(sent)) {
    // Text that was already sent was edited: it cannot be unsaid. Carry on
    // from the current end; the edit itself is not spoken.
    sent = value.slice(0, lastBoundary(value));
    say("Text already sent cannot be changed; new words are spoken from the end.");
  }
  const end = all ? value.length : Math.max(sent.length, lastBoundary(value));
  const piece = value.slice(sent.length, end);
  if (piece) {
    if (!typing) {
      typing = true;
      if (!utterance || utterance.mode !== "type" || stats.state === "stopped") {
        beginUtterance("type", stats.lastInputAt ?? performance.now());
      }
      player.begin(false);
    }
    sock.sendText(piece);
    sent = value.slice(0, end);
  }
  if (all && typing) {
    sock.send({ type: "flush" });
    pendingFlushes += 1;
    typing = false;
    player.setCounting(true); // all of it is owed now: running dry is an underrun
  }
}

function lastBoundary(value) {
  const m = /[\s.,;:!?…)"'\]]+(?=[^\s.,;:!?…)"'\]]*$)/.exec(value);
  return m ? m.index + m[0].length : 0;
}

async function onTyped() {
  stats.lastInputAt = performance.now();
  if (!typeMode) return;
  clearTimeout(pauseTimer);
  try {
    await player.ensure();
    await session();
  } catch (e) {
    alertUser(`Could not connect: ${e.message}`);
    return;
  }
  sendTyped(false);
  pauseTimer = setTimeout(() => sendTyped(true), TYPE_PAUSE_MS);
}

// ------------------------------------------------------------------ display

function renderStats() {
  const set = (id, v) => {
    const el = $(id);
    if (el.textContent !== v) el.textContent = v;
  };
  set("stat-ttfa", stats.ttfaMs === null ? "—" : `${stats.ttfaMs} ms`);
  set("stat-buffer", `${stats.bufferMs} ms`);
  set("stat-target", `${stats.targetMs || 80} ms`);
  set("stat-underruns", String(stats.underruns));
  const audioS = sessionFrames * 0.02;
  if (audioS > 0) stats.measuredKbps = Math.round((sessionBytes * 8) / audioS / 100) / 10;
  set(
    "stat-bitrate",
    stats.encoding === "pcm_s16le"
      ? `${Math.round((outputFormat().sample_rate * 16) / 1000)} kbps PCM`
      : stats.measuredKbps === null
        ? els.output.selectedOptions[0].textContent
        : `${stats.measuredKbps} kbps`,
  );
  set("stat-frames", `${stats.framesDecoded} / ${stats.framesReceived}`);
  set("stat-played", `${(stats.samplesPlayed / player.sampleRate).toFixed(1)} s`);
  set("stat-stop", stats.stopLatencyMs === null ? "—" : `${stats.stopLatencyMs} ms`);
}

/** A scrolling level envelope of what is being played, plus a peak meter. */
function drawScope() {
  const canvas = els.scope;
  const g = canvas.getContext("2d");
  const data = new Float32Array(1024);
  const bars = []; // level per step, newest last
  const STEP_MS = 40;
  let last = 0;
  const draw = (now) => {
    requestAnimationFrame(draw);
    if (now - last < STEP_MS) return;
    last = now;
    let peak = 0;
    if (player.analyser) {
      player.analyser.getFloatTimeDomainData(data);
      for (const v of data) peak = Math.max(peak, Math.abs(v));
    }
    // Levels on a 54 dB scale read better than raw amplitude: speech is mostly quiet.
    const db = peak > 0 ? 20 * Math.log10(peak) : -120;
    const level = Math.max(0, Math.min(1, (db + 54) / 54));
    els.level.style.setProperty("--level", level.toFixed(3));
    const dpr = devicePixelRatio || 1;
    const w = Math.round(canvas.clientWidth * dpr);
    const h = Math.round(canvas.clientHeight * dpr);
    if (!w || !h) return;
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    const bw = 3 * dpr;
    const gap = 2 * dpr;
    const count = Math.floor(w / (bw + gap));
    bars.push(level);
    if (bars.length > count) bars.splice(0, bars.length - count);
    g.clearRect(0, 0, w, h);
    g.fillStyle = getComputedStyle(canvas).color;
    const mid = h / 2;
    for (let i = 0; i < bars.length; i++) {
      const x = w - (bars.length - i) * (bw + gap);
      const half = Math.max(dpr, bars[i] * (h / 2 - 4 * dpr));
      g.fillRect(x, mid - half, bw, half * 2);
    }
  };
  requestAnimationFrame(draw);
}

// ------------------------------------------------------------------ start-up

const cloner = new VoiceCloner({
  engine: () => els.engine.value,
  added: async (voice) => {
    await loadVoices();
    if (voice && voice.id) {
      if (voice.engine) els.engine.value = voice.engine;
      fillVoices();
      els.voice.value = voice.id;
    }
  },
});

async function main() {
  opusOk = await webCodecsOpus();
  stats.decoder = opusOk ? "webcodecs-opus" : "pcm";
  if (!opusOk) {
    for (const o of els.output.options) if (o.value.startsWith("opus")) o.disabled = true;
    els.output.value = "pcm";
    els.codecNote.hidden = false;
    els.codecNote.textContent =
      "This browser cannot decode Opus with WebCodecs, so the page asks the server for 16-bit PCM instead (about 25 times the data).";
  }
  if (new URLSearchParams(location.search).has("capture")) {
    // Tests read back every sample the worklet played.
    player.setCapture(true);
    window.voxwireCapture = () => {
      const n = player.captured.reduce((a, c) => a + c.length, 0);
      const pcm = new Int16Array(n);
      let i = 0;
      for (const c of player.captured) {
        for (const v of c) pcm[i++] = Math.max(-32768, Math.min(32767, Math.round(v * 32767)));
      }
      let bin = "";
      const bytes = new Uint8Array(pcm.buffer);
      for (let j = 0; j < bytes.length; j += 0x8000) {
        bin += String.fromCharCode(...bytes.subarray(j, j + 0x8000));
      }
      return { sampleRate: player.sampleRate, pcm: btoa(bin) };
    };
  }

  els.speak.addEventListener("click", (e) => speak(e.timeStamp));
  els.stop.addEventListener("click", (e) => stop(e.timeStamp));
  els.type.addEventListener("click", () => setTypeMode(!typeMode));
  els.text.addEventListener("input", (e) => {
    if (!e.isComposing) onTyped();
  });
  els.text.addEventListener("compositionend", onTyped);
  els.text.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      speak(e.timeStamp);
    }
  });
  els.engine.addEventListener("change", fillVoices);
  // Browsers start audio only after a user gesture: set it up at the first one,
  // so that Speak does not also wait for the worklet module to load.
  const warm = () => {
    player
      .ensure()
      .then(() => {
        stats.sampleRate = player.sampleRate;
      })
      .catch(() => {}); // reported when Speak needs it
  };
  document.addEventListener("pointerdown", warm, { once: true, capture: true });
  document.addEventListener("keydown", warm, { once: true, capture: true });
  els.speed.addEventListener("input", () => {
    els.speedValue.textContent = `${Number(els.speed.value).toFixed(2)}×`;
  });
  setState("idle");
  renderStats();
  drawScope();
  await loadSettings();
  document.body.dataset.ready = "true";
}

main();
