"""ElevenLabs ``stream-input`` and ``multi-stream-input`` (sans-I/O codec).

Paths ``/v1/text-to-speech/{voice_id}/stream-input`` (one context) and
``.../multi-stream-input`` (up to ``max_contexts``, each named by ``context_id``).
docs/dialects.md lists every field and what voxwire does with it.

The one rule ElevenLabs leaves open: ``close_context``. Clients send it after a
``flush`` at the end of a reply (the flushed text must still be spoken) and on an
interruption (the audio must stop). So a ``close_context`` right after a
``flush`` finishes the context; any other (text sent since the last flush, or a
second one) stops it at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server import protocol as p
from server.conversation.types import CLOSE_POLICY
from server.dialects import intents as i
from server.dialects.alignment import Aligner
from server.dialects.common import b64, clamp_speed, encode, field, json_object

MAX_CONTEXTS = 5  # ElevenLabs' documented limit per connection
_PCM_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
_MP3_RATES = (22050, 24000, 44100, 48000)
_DEFAULT_CTX = "default"  # a multi-context message without a context_id


def output_format(name: str) -> i.AudioFormat:
    """ElevenLabs' ``output_format`` names: pcm_<rate>, ulaw_8000, alaw_8000,
    mp3_<rate>_<kbps>, opus_48000_<kbps>."""
    parts = name.split("_")
    try:
        nums = [int(x) for x in parts[1:]]
    except ValueError:
        nums = []
    kind = parts[0]
    if kind == "pcm" and len(nums) == 1 and nums[0] in _PCM_RATES:
        return i.AudioFormat("pcm_s16le", nums[0], name)
    if name == "ulaw_8000":
        return i.AudioFormat("mulaw", 8000, name)
    if name == "alaw_8000":
        return i.AudioFormat("alaw", 8000, name)
    if kind == "mp3" and len(nums) == 2 and nums[0] in _MP3_RATES and 32 <= nums[1] <= 192:
        return i.AudioFormat("mp3", nums[0], name, nums[1] * 1000)
    if kind == "opus" and len(nums) == 2 and nums[0] == 48000 and 32 <= nums[1] <= 192:
        return i.AudioFormat("ogg_opus", 48000, name, nums[1] * 1000)
    raise i.DialectError(
        "invalid_output_format",
        f"output_format {name!r} is not supported; use pcm_8000, pcm_16000, pcm_22050, "
        "pcm_24000, pcm_44100, pcm_48000, ulaw_8000, alaw_8000, mp3_<22050|24000|44100|"
        "48000>_<32-192> or opus_48000_<32-192>",
        CLOSE_POLICY,
    )


class ElevenLabsCodec:
    protocol = "elevenlabs"
    # ElevenLabs closes with 1008 on these; voxwire's other refusals leave it open
    fatal_codes = frozenset(
        {
            "max_active_conversations",
            "unknown_voice",
            "unknown_engine",
            "unsupported_language",
            "unsupported_output_format",
        }
    )

    def __init__(self, voice: str, query: Mapping[str, str], multi: bool) -> None:
        self.voice = voice
        self.multi = multi
        self.max_contexts = MAX_CONTEXTS if multi else 1
        self.model = query.get("model_id")
        self.fmt = output_format(query.get("output_format", "mp3_44100_128"))
        self.language = query.get("language_code") or None
        self.auto = query.get("auto_mode", "false").lower() == "true"
        self.inactivity_s = _inactivity(query.get("inactivity_timeout"))
        self.api_key: str | None = None  # the first message's xi_api_key, for the edge
        self._first = True
        self._opened: set[str] = set()
        self._finishing: set[str] = set()
        # contexts whose last message was the client's flush (auto_mode's do not count)
        self._flushed: set[str] = set()
        self._align: dict[str, Aligner] = {}
        self._pending: dict[str, dict[str, list[object]]] = {}

    # ------------------------------------------------------------------ client -> server

    def greeting(self) -> list[i.Wire]:
        return []

    def opening(self) -> list[i.Intent]:
        return []

    def decode(self, text: str) -> list[i.Intent]:
        try:
            return self._decode(text)
        except i.DialectError as err:
            # ElevenLabs answers a message that does not follow its schema with an
            # error and closes with 1008; so does voxwire
            if err.close_code is None:
                err.close_code = CLOSE_POLICY
            raise

    def _decode(self, text: str) -> list[i.Intent]:
        msg = json_object(text, CLOSE_POLICY)
        if self._first:
            self._first = False
            key = msg.get("xi_api_key") or msg.get("xi-api-key")
            self.api_key = key if isinstance(key, str) else None
        ctx = self._ctx(msg)
        said = field(msg, "text", str)
        if field(msg, "close_socket", bool, False):
            return [i.CloseSocket()]
        if field(msg, "close_context", bool, False):
            return self._close_context(ctx)
        out: list[i.Intent] = []
        if ctx not in self._opened:
            if said is None and not field(msg, "flush", bool, False):
                return []  # nothing for a context that is not open
            if said == "" and self.multi:
                return []  # a keep-alive before the context opened
            out.append(i.Open(ctx, self._args(msg)))
            self._opened.add(ctx)
            if said is not None and not said.strip():
                said = None  # the init message's " " is no text
        if said == "" and not self.multi:
            return [*out, i.Finish(ctx), i.CloseSocket()]
        if said:
            self._flushed.discard(ctx)
            out.append(i.Say(ctx, said))
        if field(msg, "flush", bool, False):
            self._flushed.add(ctx)  # only the client's own flush makes close_context a finish
            out.append(i.Flush(ctx))
        elif self.auto and said and said.strip():
            out.append(i.Flush(ctx))
        return out

    def _ctx(self, msg: dict[str, Any]) -> str:
        if not self.multi:
            return "0"
        return field(msg, "context_id", str, _DEFAULT_CTX) or _DEFAULT_CTX

    def _close_context(self, ctx: str) -> list[i.Intent]:
        if ctx not in self._opened:
            return []
        if ctx in self._flushed and ctx not in self._finishing:
            self._finishing.add(ctx)
            return [i.Finish(ctx)]
        return [i.Stop(ctx)]

    def _args(self, msg: dict[str, Any]) -> i.StreamArgs:
        vs = field(msg, "voice_settings", dict, {})
        speed = field(vs, "speed", (int, float), 1.0)
        return i.StreamArgs(
            voice=self.voice,
            model=self.model,
            fmt=self.fmt,
            language=self.language,
            speed=clamp_speed(speed),
            timings=True,
        )

    # ------------------------------------------------------------------ server -> client

    def render_audio(self, ctx: str, data: bytes) -> i.Wire:
        msg: dict[str, object] = {"audio": b64(data), "isFinal": None}
        align = self._pending.pop(ctx, None)
        msg["alignment"] = align
        msg["normalizedAlignment"] = align
        if self.multi:
            msg["contextId"] = ctx
        return encode(msg).decode()

    def render_segment(self, ctx: str, seg: p.Segment) -> list[i.Wire]:
        self._align.setdefault(ctx, Aligner()).segment_started(seg.index, seg.text)
        return []

    def render_words(self, ctx: str, words: p.Words) -> list[i.Wire]:
        al = self._align.get(ctx)
        got = al.words(words) if al is not None else None
        if got is not None:
            pending = self._pending.get(ctx)
            if pending is None:
                self._pending[ctx] = got
            else:  # two sentences' words before an audio message: one alignment
                for k in ("chars", "charStartTimesMs", "charDurationsMs"):
                    pending[k].extend(got[k])
        return []

    def render_flushed(self, ctx: str) -> list[i.Wire]:
        return []

    def render_cancelled(self, ctx: str) -> list[i.Wire]:
        return []

    def render_final(self, ctx: str, cancelled: bool) -> list[i.Wire]:
        self._opened.discard(ctx)
        self._finishing.discard(ctx)
        self._flushed.discard(ctx)
        self._align.pop(ctx, None)
        self._pending.pop(ctx, None)
        msg: dict[str, object] = {"isFinal": True}
        if self.multi:
            msg["contextId"] = ctx
        return [encode(msg).decode()]

    def render_error(self, err: i.DialectError) -> list[i.Wire]:
        msg: dict[str, object] = {"message": err.message, "error": err.code}
        if err.close_code is not None:
            msg["code"] = err.close_code
        if self.multi and err.ctx is not None:
            msg["contextId"] = err.ctx
        return [encode(msg).decode()]


def _inactivity(value: str | None) -> float:
    """``inactivity_timeout``: seconds without a message before the close (20 by
    default, at most 180, as ElevenLabs documents)."""
    if value is None:
        return 20.0
    try:
        s = float(value)
    except ValueError:
        raise i.DialectError(
            "invalid_inactivity_timeout",
            f"inactivity_timeout {value!r} is not a number of seconds",
            CLOSE_POLICY,
        ) from None
    if not 1 <= s <= 180:
        raise i.DialectError(
            "invalid_inactivity_timeout",
            f"inactivity_timeout must be between 1 and 180 seconds, not {value}",
            CLOSE_POLICY,
        )
    return s
