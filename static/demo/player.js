// Main-thread half of the demo player: decodes what the WebSocket delivers
// (Opus through WebCodecs, or raw 16-bit PCM) and hands float samples to the
// AudioWorklet ring buffer in playback-worklet.js.

/** True when this browser can decode raw Opus packets with WebCodecs. */
export async function webCodecsOpus() {
  if (typeof AudioDecoder === "undefined" || typeof EncodedAudioChunk === "undefined") {
    return false;
  }
  try {
    const r = await AudioDecoder.isConfigSupported({
      codec: "opus",
      sampleRate: 48000,
      numberOfChannels: 1,
    });
    return Boolean(r.supported);
  } catch {
    return false;
  }
}

/** Linear-interpolating resampler that keeps its phase across calls; used only
 * when the browser refuses a 48 kHz AudioContext. */
class LinearResampler {
  constructor(from, to) {
    this.step = from / to;
    this.pos = 0; // position in the input, relative to the current chunk
    this.last = 0; // last sample of the previous chunk (input index -1)
  }

  process(x) {
    if (x.length === 0) return x;
    const out = [];
    let pos = this.pos;
    // Interpolate between x[i] and x[i + 1]; index -1 is the previous chunk's last sample.
    while (pos < x.length - 1) {
      const i = Math.floor(pos);
      const a = i < 0 ? this.last : x[i];
      out.push(a + (x[i + 1] - a) * (pos - i));
      pos += this.step;
    }
    this.pos = pos - x.length;
    this.last = x[x.length - 1];
    return Float32Array.from(out);
  }
}

export class Player {
  /**
   * @param {{onMessage: (m: object) => void}} hooks receives every worklet message
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.ctx = null;
    this.node = null;
    this.analyser = null;
    this.decoder = null;
    this.format = null; // ready.output of the current session
    this.frameUs = 20000;
    this.resampler = null;
    this.dropBelow = 0; // decoded frames numbered below this are barge-in leftovers
    this.framesDecoded = 0;
    this.decodeErrors = 0;
    this.flushIds = 0;
    this.capturing = false;
    this.captured = [];
  }

  /** Create the AudioContext and the worklet (call from a click: autoplay rules). */
  async ensure() {
    if (!this.ctx) {
      let ctx;
      try {
        // 48 kHz is Opus's native rate: no resampling anywhere.
        ctx = new AudioContext({ sampleRate: 48000, latencyHint: "interactive" });
      } catch {
        ctx = new AudioContext({ latencyHint: "interactive" });
      }
      this.ctx = ctx;
      this.ready = (async () => {
        await ctx.audioWorklet.addModule(new URL("./playback-worklet.js", import.meta.url));
        const node = new AudioWorkletNode(ctx, "voxwire-player", {
          numberOfInputs: 0,
          numberOfOutputs: 1,
          outputChannelCount: [1],
          processorOptions: { targetMs: 80, maxTargetMs: 300 },
        });
        node.port.onmessage = (e) => this.onWorklet(e.data);
        const analyser = ctx.createAnalyser();
        analyser.fftSize = 2048;
        node.connect(analyser);
        analyser.connect(ctx.destination);
        this.node = node;
        this.analyser = analyser;
        if (this.capturing) node.port.postMessage({ type: "capture", on: true });
      })();
    }
    await this.ready;
    if (this.ctx.state !== "running") await this.ctx.resume();
  }

  get sampleRate() {
    return this.ctx ? this.ctx.sampleRate : 48000;
  }

  /** Keep a copy of every sample played (tests read it through window). */
  setCapture(on) {
    this.capturing = on;
    if (this.node) this.node.port.postMessage({ type: "capture", on });
  }

  onWorklet(m) {
    if (m.type === "capture") {
      this.captured.push(m.samples);
      return;
    }
    this.hooks.onMessage(m);
  }

  /** A new session: `output` is the server's ready.output. */
  setFormat(output) {
    this.format = output;
    this.frameUs = output.frame_ms * 1000;
    this.dropBelow = 0;
    if (this.decoder && this.decoder.state !== "closed") this.decoder.close();
    this.decoder = null;
    if (output.encoding === "opus") {
      this.decoder = new AudioDecoder({
        output: (data) => this.onDecoded(data),
        error: (e) => {
          this.decodeErrors += 1;
          this.hooks.onMessage({ type: "decode-error", message: String(e && e.message) });
        },
      });
      // No `description`: each EncodedAudioChunk is one raw Opus packet.
      this.decoder.configure({ codec: "opus", sampleRate: output.sample_rate, numberOfChannels: 1 });
    }
    this.resampler =
      output.sample_rate === this.sampleRate
        ? null
        : new LinearResampler(output.sample_rate, this.sampleRate);
  }

  /** One binary WebSocket message, frame number `frame` of the session. */
  pushPacket(buf, frame) {
    if (!this.format) return;
    if (this.format.encoding === "opus") {
      if (!this.decoder || this.decoder.state !== "configured") return;
      this.decoder.decode(
        new EncodedAudioChunk({ type: "key", timestamp: frame * this.frameUs, data: buf }),
      );
    } else {
      const pcm = new Int16Array(buf);
      const f = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) f[i] = pcm[i] / 32768;
      this.framesDecoded += 1;
      this.toWorklet(f, frame);
    }
  }

  onDecoded(data) {
    const frame = Math.round(data.timestamp / this.frameUs);
    if (frame < this.dropBelow) {
      data.close();
      return;
    }
    const f = new Float32Array(data.numberOfFrames);
    data.copyTo(f, { planeIndex: 0, format: "f32-planar" });
    data.close();
    this.framesDecoded += 1;
    this.toWorklet(f, frame);
  }

  toWorklet(samples, frame) {
    const s = this.resampler ? this.resampler.process(samples) : samples;
    if (!this.node || s.length === 0) return;
    this.node.port.postMessage({ type: "push", samples: s, frame }, [s.buffer]);
  }

  /** An utterance starts; `counting`: running dry now counts as an underrun. */
  begin(counting) {
    if (this.node) this.node.port.postMessage({ type: "begin", counting });
  }

  setCounting(on) {
    if (this.node) this.node.port.postMessage({ type: "counting", on });
  }

  /** The server has sent the whole utterance: play out the rest. */
  end() {
    if (this.node) this.node.port.postMessage({ type: "end" });
  }

  /**
   * Barge-in: silence now. Frames numbered below `boundary` that are still in
   * the decoder are dropped when they come out. Returns the flush id that the
   * worklet's `silenced` message carries (0: no worklet yet).
   */
  flush(boundary) {
    this.dropBelow = Math.max(this.dropBelow, boundary);
    if (!this.node) return 0; // no audio yet: nothing to silence, no reply comes
    this.flushIds += 1;
    this.node.port.postMessage({ type: "flush", id: this.flushIds });
    return this.flushIds;
  }

  /** performance.now() time at which context time `t` is heard. */
  contextToPerformance(t) {
    const ctx = this.ctx;
    const ts = ctx.getOutputTimestamp ? ctx.getOutputTimestamp() : null;
    if (ts && ts.performanceTime > 0) return ts.performanceTime + (t - ts.contextTime) * 1000;
    const latency = (ctx.outputLatency || 0) + (ctx.baseLatency || 0);
    return performance.now() + (t - ctx.currentTime + latency) * 1000;
  }
}
