"""Wire protocol v1: every message on ``/v1/stream`` as a msgspec type, plus the codec.

The codec is sans-I/O: ``decode_client_message`` takes the text of one WebSocket
message and returns a typed message or a ``ProtocolError`` that names what was
wrong. The JSON Schema in docs/protocol.schema.json is generated from these types
(``python -m server.protocol``), so the document cannot drift from the code.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Final, Literal

import msgspec

Encoding = Literal["opus", "pcm_s16le", "pcm_s16be", "mulaw", "alaw"]

OPUS_RATES: Final = (8000, 12000, 16000, 24000, 48000)
OPUS_FRAME_MS: Final = (10, 20, 40, 60)
PCM_FRAME_MS: Final = (10, 20, 40, 60, 80, 100)
MIN_RATE: Final = 8000
MAX_RATE: Final = 48000


class Pacing(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How fast frames leave: ``asap`` (as they are made) or ``realtime`` (at most
    ``lead_ms`` ahead of the listener, for a bridge that forwards blindly)."""

    mode: Literal["realtime", "asap"] = "realtime"
    lead_ms: Annotated[int, msgspec.Meta(ge=0, le=5000)] = 200


class RtpTransport(
    msgspec.Struct, tag="rtp", tag_field="type", kw_only=True, forbid_unknown_fields=True
):
    """Send the audio as RTP to ``host``:``port`` instead of as WebSocket frames (control
    and events stay on the WebSocket). The server must allow the destination
    (``rtp_allowed_destinations``)."""

    # An IP address or a DNS name (resolved once, at start); no brackets, no port.
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9._:%-]+$")]
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)]
    # Left out: the static type (PCMU 0, PCMA 8) or 111 (Opus) / 96 (L16).
    payload_type: Annotated[int, msgspec.Meta(ge=0, le=127)] | None = None
    # Left out: derived from the session id, so a resumed session keeps it on any node.
    ssrc: Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)] | None = None


# Encodings RTP carries: Opus (RFC 7587), PCMU/PCMA (RFC 3551), L16 (big-endian).
RTP_ENCODINGS: Final = ("opus", "mulaw", "alaw", "pcm_s16be")


class OutputFormat(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The audio format of the binary frames."""

    encoding: Encoding = "opus"
    sample_rate: Annotated[int, msgspec.Meta(ge=MIN_RATE, le=MAX_RATE)] = 48000
    frame_ms: int = 20
    bitrate: Annotated[int, msgspec.Meta(ge=6000, le=510000)] | None = None
    channels: Literal[1, 2] = 1  # 2: the mono signal in both channels, interleaved
    pacing: Pacing | None = None  # None: as fast as frames are made
    transport: RtpTransport | None = None  # None: binary frames on the WebSocket


# ---------------------------------------------------------------- client -> server


class ResumeRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Take over a session whose connection dropped, on this node or any other."""

    session_id: str
    token: str  # ``resume_token`` from the session's last ``ready``
    # The first frame to (re)send: the number of binary frames received so far. Left out,
    # it is one past the last frame the client acknowledged with ``ack``.
    from_frame: Annotated[int, msgspec.Meta(ge=0)] | None = None


class EngineOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-stream engine controls; a field left out keeps the engine's default. Each
    engine honours its own (``GET /v1/engines`` lists them with their defaults), and
    naming another engine's is an error."""

    noise_scale: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None  # Piper
    noise_w: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None  # Piper
    speaker: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None  # Piper
    cfg_strength: Annotated[float, msgspec.Meta(ge=0.0, le=10.0)] | None = None  # F5
    nfe_steps: Annotated[int, msgspec.Meta(ge=4, le=64)] | None = None  # F5
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)] | None = None  # F5
    cross_fade_s: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None  # F5

    def named(self) -> list[str]:
        """The options set, by name."""
        return [f for f in self.__struct_fields__ if getattr(self, f) is not None]


class Start(msgspec.Struct, tag="start", kw_only=True, forbid_unknown_fields=True):
    """Opens an utterance stream; must be the first message."""

    voice: str | None = None
    engine: str | None = None
    language: str | None = None
    speed: Annotated[float, msgspec.Meta(ge=0.5, le=2.0)] = 1.0
    output: OutputFormat | None = None
    # "word": a ``words`` event after each chunk's ``segment`` with its words' times
    timings: Literal["word"] | None = None
    engine_options: EngineOptions | None = None
    # Resume a session: it keeps its own settings, so the fields above are left out.
    resume: ResumeRequest | None = None


class Text(msgspec.Struct, tag="text", kw_only=True, forbid_unknown_fields=True):
    """A piece of text; it may end mid-word."""

    text: str


class Flush(msgspec.Struct, tag="flush", forbid_unknown_fields=True):
    """Synthesize everything buffered now, sentence end or not."""


class Cancel(msgspec.Struct, tag="cancel", forbid_unknown_fields=True):
    """Barge-in: drop buffered text, queued engine work and unsent audio."""


class End(msgspec.Struct, tag="end", forbid_unknown_fields=True):
    """No more text: synthesize the rest, send ``done`` and close with 1000."""


class Ack(msgspec.Struct, tag="ack", kw_only=True, forbid_unknown_fields=True):
    """Playback progress: every frame up to and including ``frame`` has been played."""

    frame: Annotated[int, msgspec.Meta(ge=0)]


ClientMessage = Start | Text | Flush | Cancel | End | Ack

# ---------------------------------------------------------------- server -> client


class Ready(msgspec.Struct, tag="ready", kw_only=True):
    session_id: str
    output: OutputFormat
    engine: str
    voice: str
    # Opus only: encoder delay in 48 kHz samples, the OpusHead pre-skip for an Ogg writer.
    pre_skip: int = 0
    # Present when the session can be resumed: pass it back in ``start.resume``.
    resume_token: str | None = None
    resumed: bool = False  # this connection took over an existing session
    next_frame: int = 0  # the number of the next binary frame (resume: ``from_frame``)
    chars_accepted: int = 0  # resume: text characters the session has accepted in all
    sdp: str | None = None  # output.transport rtp: the stream's SDP, for the receiver


class ResumeHint(msgspec.Struct, kw_only=True):
    """Sent with a closing error when the session can be resumed elsewhere."""

    session_id: str
    from_frame: int  # frames sent on this connection; the client may have received fewer


class Segment(msgspec.Struct, tag="segment", kw_only=True):
    """Sent before the first audio frame of each synthesized chunk."""

    index: int
    text: str
    first_frame: int


class WordTiming(msgspec.Struct, kw_only=True):
    """One word of a segment and when the listener hears it."""

    text: str
    char: int  # where the word starts in the segment's text (code points)
    start: float  # seconds from the stream's first frame, on the output timeline
    end: float


class Words(msgspec.Struct, tag="words", kw_only=True, omit_defaults=True):
    """Word timings of a segment (``start.timings: "word"``); a segment may get more than
    one (one per sentence the engine made)."""

    segment: int
    words: list[WordTiming]
    estimated: bool = False  # True: from a duration rule, not the engine's alignment


class Flushed(msgspec.Struct, tag="flushed"):
    pass


class Cancelled(msgspec.Struct, tag="cancelled"):
    pass


class Done(msgspec.Struct, tag="done", kw_only=True):
    frames: int


class Error(msgspec.Struct, tag="error", kw_only=True, omit_defaults=True):
    code: str
    message: str
    fatal: bool  # always sent: the connection closes after a fatal error
    resume: ResumeHint | None = None  # sent only when the session can be resumed


ServerMessage = Ready | Segment | Words | Flushed | Cancelled | Done | Error

_client_decoder: Final = msgspec.json.Decoder(ClientMessage)
_encoder: Final = msgspec.json.Encoder()

CLIENT_TYPES: Final = ("start", "text", "flush", "cancel", "end", "ack")


class ProtocolError(Exception):
    """A client message that cannot be accepted; ``code`` is sent as the error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def decode_client_message(data: str | bytes) -> ClientMessage:
    """Decode one client text message, or raise ProtocolError naming the fault."""
    try:
        msg: ClientMessage = _client_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise _classify(str(exc), data) from None
    except (msgspec.DecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise ProtocolError("invalid_json", f"message is not valid JSON: {exc}") from None
    if isinstance(msg, Start):
        if msg.resume is not None and (
            msg.voice
            or msg.engine
            or msg.language
            or msg.output
            or msg.speed != 1.0
            or msg.engine_options
        ):
            raise ProtocolError(
                "invalid_field",
                "a 'start' with 'resume' continues the session with its own settings; "
                "leave out voice, engine, language, speed, engine_options and output",
            )
        if msg.output is not None:
            check_output(msg.output)
    return msg


def check_output(out: OutputFormat) -> None:
    """Range checks that depend on more than one field of the output format."""
    if out.transport is not None:
        _check_rtp(out)
    if out.encoding == "opus":
        if out.sample_rate not in OPUS_RATES:
            raise ProtocolError(
                "out_of_range",
                f"output.sample_rate {out.sample_rate} is not an Opus rate; use one of "
                + ", ".join(map(str, OPUS_RATES)),
            )
        if out.frame_ms not in OPUS_FRAME_MS:
            raise ProtocolError(
                "out_of_range",
                f"output.frame_ms {out.frame_ms} is not an Opus frame size; use one of "
                + ", ".join(map(str, OPUS_FRAME_MS)),
            )
    else:
        if out.frame_ms not in PCM_FRAME_MS:
            raise ProtocolError(
                "out_of_range",
                f"output.frame_ms {out.frame_ms} is not allowed; use one of "
                + ", ".join(map(str, PCM_FRAME_MS)),
            )
        if out.bitrate is not None:
            raise ProtocolError(
                "invalid_field", f"output.bitrate applies to opus only, not {out.encoding}"
            )


def _check_rtp(out: OutputFormat) -> None:
    if out.encoding not in RTP_ENCODINGS:
        hint = " (RTP's L16 is big-endian: use pcm_s16be)" if out.encoding == "pcm_s16le" else ""
        raise ProtocolError(
            "invalid_field",
            f"output.encoding {out.encoding} cannot go over RTP{hint}; use one of "
            + ", ".join(RTP_ENCODINGS),
        )
    if out.encoding in ("mulaw", "alaw") and (out.sample_rate != 8000 or out.channels != 1):
        raise ProtocolError(
            "invalid_field",
            f"output.encoding {out.encoding} over RTP is 8000 Hz mono (RFC 3551), not "
            f"{out.sample_rate} Hz with {out.channels} channel(s)",
        )
    if out.pacing is not None and out.pacing.mode != "realtime":
        raise ProtocolError(
            "invalid_field",
            "output.pacing.mode must be realtime with an RTP transport: RTP is sent at "
            "real time (leave pacing out for the default lead)",
        )


def _classify(text: str, data: str | bytes) -> ProtocolError:
    """Map msgspec's validation message to a stable error code."""
    if text.startswith("Invalid value") and text.endswith("`$.type`"):
        kind, repeated = _peek_type(data)
        if repeated:
            return ProtocolError(
                "invalid_message", "the 'type' key appears more than once in this message"
            )
        return ProtocolError(
            "unknown_type",
            f"unknown message type {kind!r}; expected one of " + ", ".join(CLIENT_TYPES),
        )
    if "missing required field `type`" in text or text.startswith("Expected `object`"):
        return ProtocolError(
            "invalid_message", f"{text}; every message is a JSON object with a 'type'"
        )
    if " <= " in text or " >= " in text or text.startswith("Invalid enum value"):
        return ProtocolError("out_of_range", text)
    if text.startswith("Expected `"):
        return ProtocolError("invalid_field", text)
    if "missing required field" in text:
        return ProtocolError("missing_field", text)
    if "unknown field" in text:
        return ProtocolError("unknown_field", text)
    return ProtocolError("invalid_message", text)


def _peek_type(data: str | bytes) -> tuple[Any, bool]:
    """The message's top-level 'type', and whether that key is there more than once."""
    types: list[list[Any]] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        types.append([v for k, v in items if k == "type"])
        return dict(items)

    try:
        obj = json.loads(data, object_pairs_hook=pairs)
    except (ValueError, RecursionError):  # RecursionError: deeply nested JSON
        return None, False
    if not isinstance(obj, dict):
        return None, False
    top = types[-1]  # the outermost object is closed last
    return obj.get("type"), len(top) > 1


def encode_server_message(msg: ServerMessage) -> str:
    return _encoder.encode(msg).decode()


def json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of both directions of the protocol."""
    (client, server), components = msgspec.json.schema_components(
        [ClientMessage, ServerMessage], ref_template="#/$defs/{name}"
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "voxwire-protocol-v1",
        "title": "voxwire WebSocket protocol v1 (text messages)",
        "description": "Binary messages carry exactly one audio frame each and are not "
        "described here; see docs/protocol.md.",
        "$defs": components,
        "properties": {"client_to_server": client, "server_to_client": server},
    }


def main() -> None:
    json.dump(json_schema(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
