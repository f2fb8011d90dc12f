// Audio-thread half of the demo player: a ring buffer that the main thread fills
// with decoded audio and that the audio thread drains one render quantum (128
// frames) at a time. Doing the timing here, not with one AudioBufferSourceNode
// per packet, keeps playback smooth when the main thread is busy.
//
// Messages in (port): push {samples, frame} | begin {counting} | counting {on}
//   | end | flush {id} | capture {on}
// Messages out: stats (about 10 per second) | started | underrun | drained
//   | silenced {id, time} | capture {samples}

// Quanta whose peak is below about -50 dBFS count as silence.
const SILENCE_PEAK = 0.003;
const REPORT_PERIOD_S = 0.1;
// Fade length on barge-in: 128 frames (2.7 ms at 48 kHz) is inaudible as a fade
// and avoids the click of cutting a waveform mid-cycle.
const FADE_FRAMES = 128;

class VoxwirePlayer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.ring = new Float32Array(Math.round(sampleRate * (o.initialSeconds || 8)));
    this.maxSamples = Math.round(sampleRate * (o.maxSeconds || 600));
    // Absolute sample counts; the ring index is count % ring.length.
    this.readPos = 0;
    this.writePos = 0;
    this.baseTarget = Math.round((sampleRate * (o.targetMs || 80)) / 1000);
    this.maxTarget = Math.round((sampleRate * (o.maxTargetMs || 300)) / 1000);
    this.target = this.baseTarget;
    // idle: nothing to play; buffering: filling up to `target` before playing;
    // playing: draining the ring.
    this.state = "idle";
    // final: the server said the utterance is complete, so the rest plays
    // without waiting for the jitter target and running dry is not an underrun.
    this.final = true;
    // counting: running dry now is a real underrun (audio is owed), not a wait
    // for the next words of someone still typing.
    this.counting = false;
    this.marks = []; // [absolute position, frame number], in order
    this.markHead = 0;
    this.frame = -1;
    this.samplesPlayed = 0;
    this.nonSilentSamples = 0;
    this.underruns = 0;
    this.waits = 0;
    this.overflows = 0;
    this.utteranceStart = -1; // context time of the utterance's first sample
    this.silenced = null; // a flush not yet rendered: {id, wasPlaying, fade}
    this.peak = 0;
    this.sinceReport = 0;
    this.capture = false;
    this.reportNow = false;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  onMessage(m) {
    switch (m.type) {
      case "push":
        this.push(m.samples, m.frame);
        break;
      case "begin":
        this.final = false;
        this.counting = Boolean(m.counting);
        this.utteranceStart = -1;
        if (this.state === "idle") this.state = "buffering";
        break;
      case "counting":
        this.counting = Boolean(m.on);
        break;
      case "end":
        this.final = true;
        this.counting = false;
        break;
      case "flush":
        this.flush(m.id);
        break;
      case "capture":
        this.capture = Boolean(m.on);
        break;
    }
  }

  push(samples, frame) {
    const n = samples.length;
    const needed = this.writePos - this.readPos + n;
    if (needed > this.ring.length) this.grow(needed);
    const dropped = this.writePos - this.readPos + n - this.ring.length;
    if (dropped > 0) {
      // Beyond maxSeconds of backlog: drop the oldest audio rather than grow forever.
      this.readPos += dropped;
      this.overflows += 1;
    }
    const len = this.ring.length;
    const w = this.writePos % len;
    const first = Math.min(n, len - w);
    this.ring.set(samples.subarray(0, first), w);
    if (first < n) this.ring.set(samples.subarray(first), 0);
    this.marks.push([this.writePos, frame]);
    this.writePos += n;
    if (this.state === "idle") this.state = "buffering";
  }

  grow(needed) {
    // Rare (a long text arrives faster than real time): allocate once, in order.
    let size = this.ring.length;
    while (size < needed && size < this.maxSamples) size *= 2;
    size = Math.min(size, this.maxSamples);
    if (size <= this.ring.length) return;
    const bigger = new Float32Array(size);
    const len = this.ring.length;
    for (let p = this.readPos; p < this.writePos; p++) bigger[p % size] = this.ring[p % len];
    this.ring = bigger;
  }

  take(out, count) {
    const len = this.ring.length;
    const r = this.readPos % len;
    const first = Math.min(count, len - r);
    out.set(this.ring.subarray(r, r + first), 0);
    if (first < count) out.set(this.ring.subarray(0, count - first), first);
    this.readPos += count;
    // The frame being heard is the one holding the last sample just played.
    const marks = this.marks;
    while (this.markHead + 1 < marks.length && marks[this.markHead + 1][0] < this.readPos) {
      this.markHead += 1;
    }
    if (this.markHead < marks.length) this.frame = marks[this.markHead][1];
    if (this.markHead > 512) {
      marks.splice(0, this.markHead);
      this.markHead = 0;
    }
  }

  flush(id) {
    // Drop everything now, so that messages after the flush (a new `begin`,
    // new audio) apply to a clean state; keep only a 128-frame fade-out.
    const wasPlaying = this.state === "playing";
    const k = wasPlaying ? Math.min(FADE_FRAMES, this.writePos - this.readPos) : 0;
    const fade = new Float32Array(k);
    if (k > 0) this.take(fade, k);
    for (let i = 0; i < k; i++) fade[i] *= 1 - (i + 1) / k;
    this.readPos = this.writePos;
    this.marks = [];
    this.markHead = 0;
    this.frame = -1;
    this.state = "idle";
    this.final = true;
    this.counting = false;
    this.silenced = { id, wasPlaying, fade };
  }

  process(_inputs, outputs) {
    const channels = outputs[0];
    const out = channels[0];
    const n = out.length;
    let produced = 0;

    if (this.silenced) {
      // Barge-in: this quantum plays the short fade taken at the flush, then
      // silence (or new audio from the next quantum on).
      const fade = this.silenced.fade;
      out.set(fade);
      out.fill(0, fade.length);
      produced = fade.length;
      // `time` is when this quantum ends: from then on the old audio is gone.
      this.port.postMessage({
        type: "silenced",
        id: this.silenced.id,
        wasPlaying: this.silenced.wasPlaying,
        time: currentTime + produced / sampleRate,
      });
      this.silenced = null;
      this.samplesPlayed += produced;
      this.reportNow = true;
      this.finishQuantum(channels, out, n, produced);
      return true;
    }

    if (this.state === "buffering") {
      const avail = this.writePos - this.readPos;
      if (avail >= this.target || (this.final && avail > 0)) this.state = "playing";
    }
    if (this.state === "playing") {
      const avail = this.writePos - this.readPos;
      produced = Math.min(n, avail);
      if (produced > 0) this.take(out, produced);
      if (produced > 0 && this.utteranceStart < 0) {
        this.utteranceStart = currentTime;
        this.port.postMessage({ type: "started", time: currentTime });
      }
      if (produced < n) {
        out.fill(0, produced);
        const at = currentTime + produced / sampleRate;
        if (this.final) {
          this.state = "idle";
          this.port.postMessage({ type: "drained", time: at });
          this.reportNow = true;
        } else {
          this.state = "buffering";
          if (this.counting) {
            this.underruns += 1;
            const afterStartMs = this.utteranceStart < 0 ? 0 : (at - this.utteranceStart) * 1000;
            // Re-buffer deeper next time: one underrun says the network or the
            // engine is slower than the jitter target assumed.
            this.target = Math.min(this.maxTarget, Math.round(this.target * 1.5));
            this.port.postMessage({ type: "underrun", time: at, afterStartMs });
            this.reportNow = true;
          } else {
            this.waits += 1;
          }
        }
      }
      this.samplesPlayed += produced;
    } else {
      out.fill(0);
    }
    this.finishQuantum(channels, out, n, produced);
    return true;
  }

  finishQuantum(channels, out, n, produced) {
    let peak = 0;
    for (let i = 0; i < n; i++) {
      const a = Math.abs(out[i]);
      if (a > peak) peak = a;
    }
    if (peak > SILENCE_PEAK) this.nonSilentSamples += produced;
    if (peak > this.peak) this.peak = peak;
    for (let c = 1; c < channels.length; c++) channels[c].set(out);
    if (this.capture && produced > 0) {
      this.port.postMessage({ type: "capture", samples: out.slice(0, produced) });
    }
    this.sinceReport += n;
    if (this.reportNow || this.sinceReport >= sampleRate * REPORT_PERIOD_S) {
      this.sinceReport = 0;
      this.reportNow = false;
      this.report();
    }
  }

  report() {
    this.port.postMessage({
      type: "stats",
      time: currentTime,
      samplesPlayed: this.samplesPlayed,
      nonSilentSamples: this.nonSilentSamples,
      bufferedSamples: this.writePos - this.readPos,
      targetSamples: this.target,
      underruns: this.underruns,
      waits: this.waits,
      overflows: this.overflows,
      state: this.state,
      frame: this.frame,
      peak: this.peak,
    });
    this.peak = 0;
  }
}

registerProcessor("voxwire-player", VoxwirePlayer);
