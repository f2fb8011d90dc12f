// Voice cloning from the page: record a reference with the microphone or pick a
// file, type its transcript, upload it (POST /v1/voices, multipart) and speak
// with it. Shown only when GET /v1/voices offers an `upload` object:
// {"upload": {"engine", "max_bytes", "min_s", "max_s", "formats": [...], "languages": [...]}}.

import { api } from "./stream.js";

const $ = (id) => document.getElementById(id);

function seconds(s) {
  return `${s.toFixed(1)} seconds`;
}

function megabytes(n) {
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${Math.ceil(n / 1e3)} kB`;
}

/** Duration of an audio blob as the browser decodes it, or null when it cannot. */
async function durationOf(blob) {
  try {
    const ctx = new OfflineAudioContext(1, 1, 48000);
    const buf = await ctx.decodeAudioData(await blob.arrayBuffer());
    return buf.duration;
  } catch {
    return null; // the server may still read formats this browser cannot
  }
}

function extensionOf(name, type) {
  const m = /\.([a-z0-9]+)$/i.exec(name || "");
  if (m) return m[1].toLowerCase();
  const sub = (type || "").split(";")[0].split("/")[1] || "";
  return sub.replace(/^x-/, "").toLowerCase();
}

/** The server's refusal in words a person understands. */
async function refusal(res) {
  let detail = "";
  try {
    const body = await res.clone().json();
    detail = (body && body.error && body.error.message) || body.message || body.detail || "";
  } catch {
    detail = (await res.text()).trim().slice(0, 300);
  }
  const why = {
    400: "The server could not use this sample",
    401: "Uploading needs an API key",
    403: "This key may not upload voices",
    404: "This server does not accept voice uploads",
    405: "This server does not accept voice uploads",
    409: "A voice with this name already exists",
    413: "The file is too large for the server",
    415: "The server does not accept this kind of audio file",
    422: "The server could not use this sample",
    429: "Too many uploads; wait a moment and try again",
  }[res.status];
  const head = why || `The upload failed (HTTP ${res.status} ${res.statusText})`;
  return detail && detail !== res.statusText ? `${head}: ${detail}` : `${head}.`;
}

export class VoiceCloner {
  /**
   * @param {{engine: () => string, added: (voice: object) => Promise<void>}} hooks
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.limits = null;
    this.blob = null; // the reference sample: a recording or a picked file
    this.blobName = "";
    this.blobSeconds = null;
    this.recorder = null;
    this.recStarted = 0;
    this.timer = 0;
    this.previewUrl = "";
    $("clone-record").addEventListener("click", () => this.toggleRecording());
    $("clone-file").addEventListener("change", (e) => this.picked(e.target.files[0]));
    $("clone-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.upload();
    });
  }

  /** Show the control when the server offers uploads (`voices.upload`). */
  configure(upload) {
    this.limits = upload || null;
    $("clone").hidden = !this.limits;
    if (!this.limits) return;
    const l = this.limits;
    const parts = [];
    if (l.min_s || l.max_s) parts.push(`${l.min_s || 1}–${l.max_s || 60} seconds of clear speech`);
    if (l.formats && l.formats.length) parts.push(l.formats.join(", "));
    if (l.max_bytes) parts.push(`up to ${megabytes(l.max_bytes)}`);
    $("clone-limits").textContent = parts.join(" · ");
    if (l.formats && l.formats.length) {
      $("clone-file").accept = l.formats.map((f) => (f.includes("/") ? f : `.${f}`)).join(",");
    }
    if (typeof MediaRecorder === "undefined" || !navigator.mediaDevices) {
      $("clone-record").hidden = true;
    }
  }

  say(text, kind = "info") {
    const el = $("clone-msg");
    el.textContent = text;
    el.dataset.kind = kind;
  }

  async toggleRecording() {
    if (this.recorder && this.recorder.state === "recording") {
      this.recorder.stop();
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true },
      });
    } catch (e) {
      const denied = e && (e.name === "NotAllowedError" || e.name === "SecurityError");
      this.say(
        denied
          ? "The browser did not allow the microphone. Allow it in the site settings, or choose a file instead."
          : "No microphone was found. Plug one in, or choose a file instead.",
        "error",
      );
      return;
    }
    const type = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm"].find((t) =>
      MediaRecorder.isTypeSupported(t),
    );
    const rec = new MediaRecorder(stream, type ? { mimeType: type } : undefined);
    const parts = [];
    rec.ondataavailable = (e) => {
      if (e.data.size) parts.push(e.data);
    };
    rec.onstop = () => {
      clearInterval(this.timer);
      for (const t of stream.getTracks()) t.stop();
      const took = (performance.now() - this.recStarted) / 1000;
      const mime = rec.mimeType || type || "audio/webm";
      this.setSample(new Blob(parts, { type: mime }), `recording.${extensionOf("", mime)}`, took);
      $("clone-record").textContent = "Record again";
      $("clone-record").setAttribute("aria-pressed", "false");
    };
    this.recorder = rec;
    this.recStarted = performance.now();
    rec.start(250);
    $("clone-record").textContent = "Stop recording";
    $("clone-record").setAttribute("aria-pressed", "true");
    this.say("Recording… read your transcript aloud, then press Stop recording.");
    const max = (this.limits && this.limits.max_s) || 60;
    this.timer = setInterval(() => {
      const s = (performance.now() - this.recStarted) / 1000;
      $("clone-time").textContent = seconds(s);
      if (s >= max) rec.stop(); // the server would refuse a longer one
    }, 100);
  }

  async picked(file) {
    if (!file) return;
    this.setSample(file, file.name, await durationOf(file));
  }

  setSample(blob, name, secs) {
    this.blob = blob;
    this.blobName = name;
    this.blobSeconds = secs;
    if (this.previewUrl) URL.revokeObjectURL(this.previewUrl);
    this.previewUrl = URL.createObjectURL(blob);
    const audio = $("clone-preview");
    audio.src = this.previewUrl;
    audio.hidden = false;
    $("clone-time").textContent = secs === null ? megabytes(blob.size) : seconds(secs);
    const problem = this.problem(false);
    this.say(problem || "Sample ready. Check the transcript, then upload.", problem ? "error" : "info");
  }

  /** What is wrong with the form, in plain words, or "" when it can be sent. */
  problem(full = true) {
    const l = this.limits || {};
    if (!this.blob) return "Record a sample or choose an audio file first.";
    if (l.max_bytes && this.blob.size > l.max_bytes) {
      return `The sample is ${megabytes(this.blob.size)}; the server takes at most ${megabytes(l.max_bytes)}. Use a shorter or more compressed file.`;
    }
    if (l.formats && l.formats.length) {
      const ext = extensionOf(this.blobName, this.blob.type);
      const ok = l.formats.some((f) =>
        f.includes("/") ? this.blob.type.startsWith(f) : f.toLowerCase() === ext,
      );
      if (!ok) {
        return `This kind of file (${ext || this.blob.type || "unknown"}) is not accepted; use ${l.formats.join(", ")}.`;
      }
    }
    const s = this.blobSeconds;
    if (s !== null && l.min_s && s < l.min_s) {
      return `The sample is ${seconds(s)} long; it needs at least ${l.min_s} seconds of speech.`;
    }
    if (s !== null && l.max_s && s > l.max_s) {
      return `The sample is ${seconds(s)} long; keep it under ${l.max_s} seconds.`;
    }
    if (!full) return "";
    if (!$("clone-transcript").value.trim()) {
      return "Type what is said in the sample, word for word: the voice is learned from both.";
    }
    if (!$("clone-name").value.trim()) return "Give the new voice a name.";
    return "";
  }

  async upload() {
    const problem = this.problem(true);
    if (problem) {
      this.say(problem, "error");
      return;
    }
    const form = new FormData();
    form.append("audio", this.blob, this.blobName);
    form.append("name", $("clone-name").value.trim());
    form.append("transcript", $("clone-transcript").value.trim());
    form.append("language", $("clone-language").value.trim() || "en");
    // the engine that clones on this server (f5), else the one picked on the page
    form.append("engine", (this.limits && this.limits.engine) || this.hooks.engine());
    const button = $("clone-upload");
    button.disabled = true;
    this.say("Uploading…");
    try {
      const res = await fetch(api("/v1/voices"), { method: "POST", body: form });
      if (!res.ok) {
        this.say(await refusal(res), "error");
        return;
      }
      const body = await res.json().catch(() => ({}));
      const voice = body.voice || body;
      await this.hooks.added(voice);
      this.say(`Voice “${voice.name || voice.id}” is ready: press Speak to hear it.`, "ok");
    } catch {
      this.say("Could not reach the server. Check the connection and try again.", "error");
    } finally {
      button.disabled = false;
    }
  }
}
