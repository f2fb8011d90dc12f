"""The browser demo page (``static/demo/``) in a real browser.

Debian's Chromium (the system binary, never ``playwright install``) is driven by
Playwright, headless, with autoplay allowed. The page talks to a real voxwire
server; Chromium's own Opus decoder (WebCodecs) decodes the stream and its
AudioWorklet plays it (an AudioContext renders without a sound card). The page
publishes its playback statistics on ``window.voxwireStats``; with ``?capture=1``
it also keeps every sample the worklet played, which pocketsphinx transcribes.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import io
import json
import os
import re
import shutil
import time
import wave
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from playwright.sync_api import Browser, FilePayload, Page, Playwright, sync_playwright

from tests.support import (
    ARTIFACTS,
    Received,
    Samples,
    ServerProcess,
    connect,
    recv_until,
    rms,
    send,
    transcribe,
    word_recall,
)

RATE = 48000  # the page asks for 48 kHz Opus and runs its AudioContext at 48 kHz
FRAME = RATE * 20 // 1000  # samples per 20 ms frame

SPEAK_TEXT = (
    "Good morning, and thank you for trying the voxwire demo page today. "
    "The audio you hear is decoded by the browser as it arrives. "
    "Press stop whenever you like."
)
LONG_TEXT = (
    "This is a longer passage that keeps on talking for quite a while, so that there is "
    "plenty of audio left to interrupt. It goes on about the weather, the garden and the "
    "river behind the house. Then it talks about the trains that pass the station every "
    "hour. Nobody should hear this last sentence, because the test stops it early."
)
# words the offline recognizer hears reliably (a four-word check flaked)
AFTER_STOP = "We will meet again tomorrow morning at the station."
TYPED_TEXT = (
    "Typing mode speaks each sentence as soon as it is written. "
    "This second sentence is still being typed while the first one plays. "
    "And here is the end."
)

CHROMIUM_ARGS = [
    "--autoplay-policy=no-user-gesture-required",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Chromium phones home without these; the closed test network refuses it.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # A fake microphone for the cloning control's recorder.
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        pytest.fail("Debian's chromium is missing: `bash scripts/test.sh` installs it (apt)")
    return path


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(
        executable_path=chromium_path(),
        headless=True,
        # Chromium's sandbox cannot run as root.
        chromium_sandbox=os.geteuid() != 0,
        # Playwright mutes headless audio by default; the page must really play.
        ignore_default_args=["--mute-audio"],
        args=CHROMIUM_ARGS,
    )
    try:
        yield b
    finally:
        b.close()


@dataclass
class Demo:
    """One demo page, with everything it logged and requested."""

    page: Page
    origin: str
    console: list[tuple[str, str]] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.page.evaluate("() => window.voxwireStats")
        return result

    def wait(self, condition: str, timeout_s: float = 60.0) -> None:
        """Wait until the JS expression (``s`` is the stats object) is true."""
        self.page.wait_for_function(
            f"() => {{ const s = window.voxwireStats; return Boolean({condition}); }}",
            timeout=timeout_s * 1000,
        )

    def wait_idle(self, flushed: int = 1) -> dict[str, Any]:
        """Wait until utterance number ``flushed`` has been played out."""
        self.wait(f"s.flushed >= {flushed} && s.state === 'idle' && s.samplesPlayed > 0", 90)
        return self.stats()

    def captured(self) -> Samples:
        got: dict[str, Any] = self.page.evaluate("() => window.voxwireCapture()")
        assert got["sampleRate"] == RATE
        pcm = np.frombuffer(base64.b64decode(got["pcm"]), dtype="<i2")
        return pcm.astype(np.float32) / 32768.0

    def assert_clean(self) -> None:
        errors = [text for kind, text in self.console if kind == "error"]
        assert not errors, f"console errors: {errors}"
        assert not self.page_errors, f"page errors: {self.page_errors}"
        foreign = [u for u in self.requests if not same_origin(u, self.origin)]
        assert not foreign, f"requests outside the server: {foreign}"


def same_origin(url: str, origin: str) -> bool:
    if url.startswith("blob:"):  # an object URL of the page's own data (a recording)
        url = url[5:]
    u, o = urlsplit(url), urlsplit(origin)
    return u.scheme in ("http", "ws") and u.hostname == o.hostname and u.port == o.port


OpenDemo = Callable[..., Demo]


@pytest.fixture
def open_demo(browser: Browser, server: ServerProcess) -> Iterator[OpenDemo]:
    """Open the demo page in a fresh browser context; checks it stayed clean."""
    opened: list[Demo] = []

    def open_(
        width: int = 1280,
        height: int = 860,
        init_script: str | None = None,
        path: str = "/demo/?capture=1",
    ) -> Demo:
        ctx = browser.new_context(viewport={"width": width, "height": height})
        if init_script:
            ctx.add_init_script(init_script)
        page = ctx.new_page()
        demo = Demo(page, server.http)
        page.on("console", lambda m: demo.console.append((m.type, m.text)))
        page.on("pageerror", lambda e: demo.page_errors.append(str(e)))
        page.on("request", lambda r: demo.requests.append(r.url))
        page.on("websocket", lambda ws: demo.requests.append(ws.url))
        page.goto(server.http + path)
        page.wait_for_selector("body[data-ready=true]", timeout=30000)
        opened.append(demo)
        return demo

    yield open_
    for demo in opened:
        try:
            demo.assert_clean()
        finally:
            demo.page.context.close()


def record(name: str, stats: dict[str, Any]) -> None:
    """Keep the page's figures in test-artifacts/demo-stats.json (no timing asserts
    beyond the ones the issue sets; people read these)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "demo-stats.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    keep = (
        "ttfaMs",
        "stopLatencyMs",
        "stopRenderMs",
        "underruns",
        "underrunEvents",
        "waits",
        "typingToFirstAudioMs",
    )
    data[name] = {k: stats.get(k) for k in keep} | {
        "framesReceived": stats["framesReceived"],
        "playedS": round(stats["samplesPlayed"] / RATE, 3),
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name))


def words(text: str) -> int:
    return len(re.findall(r"[A-Za-z']+", text))


def reference_frames(server: ServerProcess, text: str) -> int:
    """Frames the server sends for ``text`` to a plain WebSocket client."""

    async def run() -> Received:
        ws = await connect(server.ws_url)
        try:
            await send(ws, type="start", output={"encoding": "opus", "sample_rate": RATE})
            await send(ws, type="text", text=text)
            await send(ws, type="end")
            return await recv_until(ws, Received(), "done", timeout=90)
        finally:
            await ws.close()

    # Playwright's sync API runs an event loop on this thread: use another one.
    with ThreadPoolExecutor(1) as pool:
        return len(pool.submit(asyncio.run, run()).result().frames)


# ------------------------------------------------------------------ tests


def test_root_redirects_to_demo(server: ServerProcess) -> None:
    for path in ("/", "/demo"):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", path)
        res = conn.getresponse()
        assert res.status in (301, 302, 307, 308), (path, res.status)
        assert res.getheader("location") == "/demo/"
        conn.close()


def test_page_loads_clean_and_self_contained(open_demo: OpenDemo, server: ServerProcess) -> None:
    demo = open_demo(path="/")  # through the redirect
    page = demo.page
    assert page.url == server.http + "/demo/"
    assert page.title().startswith("voxwire")
    s = demo.stats()
    assert s["decoder"] == "webcodecs-opus"  # Chromium decodes Opus itself
    # Pickers are filled from /v1/engines and /v1/voices.
    engines = json.loads(http_get(server, "/v1/engines"))
    voices = json.loads(http_get(server, "/v1/voices"))
    assert page.eval_on_selector_all("#engine option", "os => os.map(o => o.value)") == [
        e["name"] for e in engines["engines"]
    ]
    assert page.input_value("#engine") == engines["default"]
    assert page.input_value("#voice") == voices["default"]
    assert page.input_value("#output") == "opus:32000"
    assert page.is_hidden("#codec-note")
    # No upload route on this server: the cloning control stays hidden.
    assert "upload" not in voices
    assert page.is_hidden("#clone")
    # Styles and scripts came from the server (checked by assert_clean); the page
    # also names no web font.
    css = http_get(server, "/demo/style.css")
    assert "@font-face" not in css and "@import" not in css
    for name in ("index.html", "main.js", "player.js", "playback-worklet.js", "stream.js"):
        assert not re.search(r"(https?|wss?):/", http_get(server, f"/demo/{name}")), name


def http_get(server: ServerProcess, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", path)
    res = conn.getresponse()
    body = res.read().decode()
    conn.close()
    assert res.status == 200, (path, res.status)
    return body


def test_speak_plays_the_whole_text_without_underruns(
    open_demo: OpenDemo, server: ServerProcess
) -> None:
    demo = open_demo()
    page = demo.page
    page.fill("#text", SPEAK_TEXT)
    page.click("#speak")
    # Mid-playback: a highlighted segment and a screenshot for people to look at.
    demo.wait("s.state === 'playing' && s.samplesPlayed > 1.5 * 48000 && s.segment")
    s = demo.stats()
    marked = page.text_content("#backdrop mark")
    assert marked and marked == s["segment"]["text"]
    assert SPEAK_TEXT.startswith(marked)  # the first segment is highlighted first
    screenshot(page, "demo-playing.png")

    s = demo.wait_idle()
    record("speak", s)
    assert s["encoding"] == "opus" and s["bitrate"] == 32000
    assert s["framesReceived"] > 0
    assert s["framesDecoded"] == s["framesReceived"], s
    assert s["framesDropped"] == 0
    # Every frame the server sent was played, no more and no less.
    assert abs(s["samplesPlayed"] - s["framesReceived"] * FRAME) <= FRAME, s
    # No underrun once playback has run for 300 ms (the jitter buffer covers it).
    late = [u for u in s["underrunEvents"] if u["afterStartMs"] > 300]
    assert not late, s["underrunEvents"]
    assert s["ttfaMs"] is not None and s["ttfaMs"] > 0
    assert page.text_content("#stat-ttfa") == f"{s['ttfaMs']} ms"

    # Duration: about what a plain client gets for the same text, and plausible
    # for the words (speech at 1.5–4.5 words per second).
    played_s = s["samplesPlayed"] / RATE
    ref_s = reference_frames(server, SPEAK_TEXT) * FRAME / RATE
    assert 0.8 * ref_s < played_s < 1.25 * ref_s, (played_s, ref_s)
    assert 1.5 < words(SPEAK_TEXT) / played_s < 4.5, played_s
    # Mostly speech, not silence, in what the worklet played.
    assert 0.5 * played_s < s["nonSilentSamples"] / RATE <= played_s

    audio = demo.captured()
    assert len(audio) == s["samplesPlayed"]
    assert rms(audio) > 0.01
    heard = transcribe(audio, RATE)
    assert word_recall(SPEAK_TEXT, heard) >= 0.5, heard


def test_stop_silences_playback_within_100_ms(open_demo: OpenDemo) -> None:
    demo = open_demo()
    page = demo.page
    page.fill("#text", LONG_TEXT)
    page.click("#speak")
    demo.wait("s.state === 'playing' && s.samplesPlayed > 1.0 * 48000")
    page.click("#stop")
    demo.wait("s.stopLatencyMs !== null && s.cancelled === 1", 20)
    time.sleep(0.3)  # let late frames and the worklet's last report arrive
    s1 = demo.stats()
    record("stop", s1)
    # Measured in the page: the click's timestamp to the time the worklet's
    # first silent output is heard (AudioContext output timestamps).
    assert s1["stopLatencyMs"] <= 100, s1
    assert s1["state"] == "stopped"
    assert page.is_hidden("#backdrop mark")
    time.sleep(1.0)
    s2 = demo.stats()
    # Nothing of the cancelled text plays afterwards.
    assert s2["samplesPlayed"] == s1["samplesPlayed"], (s1, s2)
    played_s = s2["samplesPlayed"] / RATE
    assert played_s < 0.6 * words(LONG_TEXT) / 2.5, played_s  # stopped well before the end
    audio = demo.captured()
    assert len(audio) == s2["samplesPlayed"]
    # Playback ends with a fade to zero, not a cut mid-waveform (a click).
    assert abs(float(audio[-1])) < 0.01

    # The session goes on after a barge-in: Speak again plays the new text.
    page.fill("#text", AFTER_STOP)
    page.click("#speak")
    s3 = demo.wait_idle(flushed=1)
    assert s3["samplesPlayed"] > s2["samplesPlayed"] + 0.5 * RATE
    # Exactly the new text's frames play: none of the cancelled audio was kept.
    new_frames = s3["framesReceived"] - s2["framesReceived"]
    assert abs(s3["samplesPlayed"] - s2["samplesPlayed"] - new_frames * FRAME) <= FRAME, (s2, s3)
    fresh = demo.captured()[len(audio) :]
    assert word_recall(AFTER_STOP, transcribe(fresh, RATE)) >= 0.5


def test_type_to_speak_plays_before_typing_ends(open_demo: OpenDemo) -> None:
    demo = open_demo()
    page = demo.page
    page.fill("#text", "")
    page.click("#type-mode")
    assert page.get_attribute("#type-mode", "aria-pressed") == "true"
    page.focus("#text")
    # Human pace: 50 ms a character, about 7 s for the three sentences.
    page.keyboard.type(TYPED_TEXT, delay=50)
    s = demo.stats()
    assert s["lastInputAt"] is not None
    assert s["firstAudioAt"] is not None, "no audio while typing"
    assert s["firstAudioAt"] < s["lastInputAt"], s
    assert page.input_value("#text") == TYPED_TEXT
    # A pause speaks the rest (flush); then everything plays out.
    s = demo.wait_idle()
    record("type", s | {"typingToFirstAudioMs": round(s["lastInputAt"] - s["firstAudioAt"])})
    assert s["framesDecoded"] == s["framesReceived"] > 0
    assert s["segments"] >= 2
    heard = transcribe(demo.captured(), RATE)
    assert word_recall(TYPED_TEXT, heard) >= 0.5, heard


def test_pcm_fallback_without_webcodecs(open_demo: OpenDemo) -> None:
    demo = open_demo(init_script="delete window.AudioDecoder; delete window.EncodedAudioChunk;")
    page = demo.page
    s = demo.stats()
    assert s["decoder"] == "pcm"
    assert page.input_value("#output") == "pcm"
    assert page.is_visible("#codec-note")
    assert "PCM" in (page.text_content("#codec-note") or "")
    # words the offline recognizer hears reliably, so the check is about the audio
    text = "The quick brown fox jumps over the lazy dog."
    page.fill("#text", text)
    page.click("#speak")
    s = demo.wait_idle()
    assert s["encoding"] == "pcm_s16le"
    assert s["samplesPlayed"] == s["framesReceived"] * FRAME
    assert s["bytesReceived"] == s["framesReceived"] * FRAME * 2
    assert word_recall(text, transcribe(demo.captured(), RATE)) >= 0.5


def test_phone_width_layout(open_demo: OpenDemo) -> None:
    demo = open_demo(width=375, height=812)
    page = demo.page
    # Nothing wider than the screen, and the controls are all reachable.
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    for sel in ("#text", "#speak", "#stop", "#type-mode", "#engine", "#voice", "#output"):
        box = page.locator(sel).bounding_box()
        assert box is not None, sel
        assert box["x"] >= 0 and box["x"] + box["width"] <= 375, (sel, box)
    # Touch targets of at least 44 px for the three main buttons.
    for sel in ("#speak", "#stop", "#type-mode"):
        box = page.locator(sel).bounding_box()
        assert box is not None and box["height"] >= 44, (sel, box)
    page.fill("#text", SPEAK_TEXT)
    page.click("#speak")
    demo.wait("s.state === 'playing' && s.samplesPlayed > 1.0 * 48000 && s.segment")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-phone.png"), full_page=True)
    page.click("#stop")
    demo.wait("s.stopLatencyMs !== null")


def wav_bytes(seconds: float) -> bytes:
    t = np.arange(int(16000 * seconds)) / 16000
    pcm = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def test_clone_control_when_the_server_offers_uploads(open_demo: OpenDemo) -> None:
    """This server (Piper only) cannot clone, so its ``/v1/voices`` has no ``upload``
    object; the test adds one to the real answer so the control's validation runs.
    The POST itself goes to the real server, which refuses it (422: Piper cannot
    clone), and the page must say so in words."""
    upload = {"max_bytes": 2_000_000, "min_s": 3, "max_s": 30, "formats": ["wav", "webm", "ogg"]}
    script = (
        "const realFetch = window.fetch;"
        "window.fetch = async (url, opts) => {"
        "  if (opts && opts.body instanceof FormData) {"
        "    window.uploaded = [...opts.body.entries()].map(([k, v]) =>"
        "      [k, v instanceof Blob ? `${v.name}:${v.size}` : v]);"
        "  }"
        "  const res = await realFetch(url, opts);"
        "  if (String(url).startsWith('/v1/voices') && !(opts && opts.method === 'POST')) {"
        "    const body = await res.json();"
        f"   body.upload = {json.dumps(upload)};"
        "    return new Response(JSON.stringify(body), {status: 200,"
        "      headers: {'content-type': 'application/json'}});"
        "  }"
        "  return res;"
        "};"
    )
    demo = open_demo(init_script=script)
    page = demo.page
    assert page.is_visible("#clone")
    assert "3–30 seconds" in (page.text_content("#clone-limits") or "")
    msg = page.locator("#clone-msg")

    page.click("#clone-upload")
    assert msg.text_content() == "Record a sample or choose an audio file first."

    # The fake microphone: a recording that is too short.
    page.click("#clone-record")
    page.wait_for_selector("#clone-record[aria-pressed=true]")
    time.sleep(1.2)
    page.click("#clone-record")
    page.wait_for_function(
        "() => document.getElementById('clone-msg').textContent.includes('at least 3 seconds')"
    )

    sample: FilePayload = {"name": "me.wav", "mimeType": "audio/wav", "buffer": wav_bytes(4)}
    page.set_input_files("#clone-file", files=[sample])
    page.wait_for_function(
        "() => document.getElementById('clone-msg').textContent.startsWith('Sample ready')"
    )
    page.click("#clone-upload")
    assert "word for word" in (msg.text_content() or "")
    page.fill("#clone-transcript", "This is my voice, recorded for the demo.")
    page.fill("#clone-name", "Me")
    with page.expect_request(lambda r: r.method == "POST" and "/v1/voices" in r.url):
        page.click("#clone-upload")
    sent = dict(page.evaluate("() => window.uploaded"))
    assert sent["audio"] == f"me.wav:{len(wav_bytes(4))}"
    assert sent["transcript"] == "This is my voice, recorded for the demo."
    assert sent["name"] == "Me" and sent["language"] == "en" and sent["engine"] == "piper"
    page.wait_for_function(
        "() => document.getElementById('clone-msg').dataset.kind === 'error' &&"
        " document.getElementById('clone-msg').textContent.includes('cannot clone voices')"
    )
    # A refused POST is logged by Chromium as a failed resource load; that one
    # console error is expected here and no other.
    demo.console[:] = [(k, t) for k, t in demo.console if not (k == "error" and "422" in t)]
