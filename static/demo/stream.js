// One voxwire session on /v1/stream (docs/protocol.md): `start`, then text in,
// events and binary audio frames out.

// A server with API keys wants a short-lived token (POST /v1/tokens) as
// ?token=; open the demo as /demo/?token=… and every request carries it.
const token = new URLSearchParams(location.search).get("token");

/** `path` on this server, with the page's token when it has one. */
export function api(path) {
  return token ? `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : path;
}

/** The server's refusal of an HTTP request, in words. */
export async function httpProblem(res) {
  let detail = "";
  try {
    const body = await res.json();
    detail = (body && body.error && body.error.message) || "";
  } catch {
    // not JSON: the status says enough
  }
  if (res.status === 401 || res.status === 403) {
    return `this server needs an API key: open the demo as /demo/?token=… with a token from POST /v1/tokens${detail ? ` (${detail})` : ""}`;
  }
  return `HTTP ${res.status}${detail ? `: ${detail}` : ""}`;
}

export function streamUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${api("/v1/stream")}`;
}

export class VoxwireSocket {
  /**
   * @param {object} start the `start` message
   * @param {{frame: (buf: ArrayBuffer, n: number) => void,
   *          event: (ev: object) => void,
   *          close: (code: number, reason: string) => void}} handlers
   */
  constructor(start, handlers) {
    this.start = start;
    this.handlers = handlers;
    this.ws = null;
    this.frames = 0; // frames are numbered from 0 per session
    this.readyEvent = null;
    this.closed = false;
  }

  /** Connect and send `start`; resolves with the `ready` event. */
  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(streamUrl());
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      ws.onopen = () => ws.send(JSON.stringify(this.start));
      ws.onmessage = (e) => {
        if (typeof e.data !== "string") {
          const n = this.frames;
          this.frames += 1;
          this.handlers.frame(e.data, n);
          return;
        }
        const ev = JSON.parse(e.data);
        if (!this.readyEvent) {
          if (ev.type === "ready") {
            this.readyEvent = ev;
            resolve(ev);
            return;
          }
          if (ev.type === "error") {
            // `start` was refused (unknown voice, bad bitrate, server busy, ...).
            reject(new Error(ev.message));
            return;
          }
        }
        this.handlers.event(ev);
      };
      ws.onclose = (e) => {
        this.closed = true;
        if (!this.readyEvent) {
          // 1006 before `ready`: the handshake itself was refused (403: another
          // site's page, or an API key is needed) or the server is down.
          const why =
            e.code === 1006
              ? "the server refused the connection or is not running (if it needs an API key, open the demo as /demo/?token=…)"
              : e.reason || `the server closed the connection (code ${e.code})`;
          reject(new Error(why));
        }
        this.handlers.close(e.code, e.reason);
      };
      // onerror carries no detail; onclose follows it and reports.
      ws.onerror = () => {};
    });
  }

  get isOpen() {
    return !this.closed && this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  send(msg) {
    if (this.isOpen) this.ws.send(JSON.stringify(msg));
  }

  /** Send text in pieces well under the server's message size limit. */
  sendText(text, piece = 4000) {
    let i = 0;
    while (i < text.length) {
      let end = Math.min(text.length, i + piece);
      // Never split a surrogate pair: half of one is not valid UTF-8 on the wire.
      const c = text.charCodeAt(end - 1);
      if (end < text.length && c >= 0xd800 && c <= 0xdbff) end -= 1;
      this.send({ type: "text", text: text.slice(i, end) });
      i = end;
    }
  }

  close() {
    this.closed = true;
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, "bye");
  }
}
