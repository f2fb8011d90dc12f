"""OpenAI-compatible HTTP speech: ``POST /v1/audio/speech`` and ``GET /v1/models``.

The request is a conversation on the same core as a WebSocket session
(server/conversation): the same chunker, engine worker, limits and engine
fallback. The pipeline's frames are put in the requested file format off the
event loop and streamed as each sentence is synthesized. A client that
disconnects cancels the queued work.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from server import admission
from server import protocol as p
from server.auth import key_of
from server.conversation import setup
from server.conversation.core import Conversation
from server.errors import ErrorBody as ErrorBody
from server.errors import error_response
from server.errors import param_of as param_of
from server.http_metrics import count_audio
from server.streaming.containers import MEDIA_TYPES, FileEncoder, ResponseFormat, file_encoder
from server.voices.registry import ensure_voice, server_voices

if TYPE_CHECKING:
    from server.appstate import AppState

log = structlog.get_logger("voxwire.speech")

MAX_INPUT_CHARS = 4096
# OpenAI's built-in voice names; each speaks with the engine's default voice here,
# so clients written for OpenAI work unchanged.
OPENAI_VOICES = frozenset(
    {
        "alloy",
        "ash",
        "ballad",
        "cedar",
        "coral",
        "echo",
        "fable",
        "marin",
        "nova",
        "onyx",
        "sage",
        "shimmer",
        "verse",
    }
)
# OpenAI model names map to the server's default engine.
OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
# Unsent audio (seconds) a slow HTTP reader may leave queued before its request
# stops taking engine work.
_MAX_UNSENT_S = 10.0


class VoiceRef(msgspec.Struct, forbid_unknown_fields=True):
    id: str


class SpeechRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /v1/audio/speech`` (OpenAI's shape)."""

    model: Annotated[
        str,
        msgspec.Meta(
            description="An engine (GET /v1/models) or tts-1, tts-1-hd, gpt-4o-mini-tts",
            examples=["tts-1"],
        ),
    ]
    input: Annotated[
        str,
        msgspec.Meta(min_length=1, max_length=MAX_INPUT_CHARS, examples=["Hello there."]),
    ]
    voice: Annotated[
        str | VoiceRef,
        msgspec.Meta(
            description="A voice of the model's engine (GET /v1/voices) or one of OpenAI's "
            "names, which speak with the default voice",
            examples=["alloy"],
        ),
    ]
    response_format: Annotated[
        ResponseFormat, msgspec.Meta(description="Honoured: the container and codec")
    ] = "mp3"
    speed: Annotated[float, msgspec.Meta(ge=0.25, le=4.0, description="Honoured")] = 1.0
    instructions: Annotated[
        str | None,
        msgspec.Meta(description="Accepted and ignored: the embedded engines take no style prompt"),
    ] = None
    stream_format: Annotated[
        Literal["audio", "sse"],
        msgspec.Meta(description="Honoured: the audio bytes, or OpenAI's server-sent events"),
    ] = "audio"
    stream: Annotated[
        bool,
        msgspec.Meta(
            description="false: the whole file in one response with Content-Length "
            "(an engine failure is then a 500, not a cut file)"
        ),
    ] = True
    language: (
        Annotated[
            str,
            msgspec.Meta(
                max_length=35,
                description="A language (BCP 47, e.g. de or de-DE): with one of OpenAI's "
                "voice names, that language's voice speaks (setting language_voices), on its "
                "engine if the model is one of OpenAI's names; an engine that does not "
                "speak it is an error",
            ),
        ]
        | None
    ) = None
    engine_options: Annotated[
        p.EngineOptions | None,
        msgspec.Meta(
            description="Per-request engine controls (GET /v1/engines lists each engine's); "
            "the OpenAI SDK sends them with extra_body"
        ),
    ] = None


class Model(msgspec.Struct, kw_only=True):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "voxwire"


class ModelList(msgspec.Struct, kw_only=True):
    object: str = "list"
    data: list[Model]


class SseDelta(msgspec.Struct, tag="speech.audio.delta", tag_field="type"):
    audio: str


class Usage(msgspec.Struct, kw_only=True):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class SseDone(msgspec.Struct, tag="speech.audio.done", tag_field="type", kw_only=True):
    usage: Usage


_request_decoder = msgspec.json.Decoder(SpeechRequest)
_json = msgspec.json.Encoder()


def resolve_model(state: AppState, model: str) -> str | None:
    if model in state.workers:
        return model
    if model in OPENAI_MODELS:
        return state.settings.engine
    return None


def resolve_voice(state: AppState, engine: str, voice: str | VoiceRef) -> str | None:
    name = voice.id if isinstance(voice, VoiceRef) else voice
    worker = state.workers[engine]
    ids = {v.id for v in worker.engine.voices()}
    if name in ids:
        return name
    if name in OPENAI_VOICES:
        return ""  # the default voice, or the language's (stream set-up decides)
    return None


async def models(request: Request) -> Response:
    state: AppState = request.app.state.voxwire
    names = list(state.workers) + list(OPENAI_MODELS)
    return Response(
        _json.encode(ModelList(data=[Model(id=n) for n in names])), media_type="application/json"
    )


async def speech(request: Request) -> Response:
    state: AppState = request.app.state.voxwire
    not_ready = admission.node_refusal(state, stream=False)
    if not_ready is not None:
        return error_response(
            not_ready.http_status, not_ready.message, "server_error", code=not_ready.code
        )
    body = await request.body()
    try:
        req = _request_decoder.decode(body)
    except msgspec.ValidationError as exc:
        return error_response(400, str(exc), param=param_of(str(exc)))
    except msgspec.DecodeError as exc:
        return error_response(400, f"request body is not valid JSON: {exc}")
    if not req.input.strip():
        return error_response(400, "input is empty", param="input")
    if not req.stream and req.stream_format == "sse":
        return error_response(
            400, "stream false asks for one file: stream_format sse cannot be", param="stream"
        )
    engine = resolve_model(state, req.model)
    if engine is None:
        known = ", ".join([*state.workers, *OPENAI_MODELS])
        return error_response(
            404,
            f"model {req.model!r} does not exist; available: {known}",
            param="model",
            code="model_not_found",
        )
    name = req.voice.id if isinstance(req.voice, VoiceRef) else req.voice
    # An uploaded voice: checked in the shared store (and its owner), loaded if need be;
    # another key's voice is refused as one that does not exist.
    problem = await ensure_voice(state, engine, name, key_of(request.scope))
    if problem is not None:
        code, message = problem
        status = 503 if code in ("state_unavailable", "not_ready") else 400
        kind = "server_error" if status == 503 else "invalid_request_error"
        return error_response(status, message, kind, param="voice", code=code)
    voice = resolve_voice(state, engine, req.voice)
    if voice is None:
        ids = sorted(v.id for v in server_voices(state.workers[engine].engine))
        return error_response(
            400,
            f"voice {req.voice!r} is not available for model {req.model!r}; use one of "
            + ", ".join(ids + sorted(OPENAI_VOICES)),
            param="voice",
        )
    kid, slot, over = await admit(state, request, len(req.input))
    if over is not None:
        return over
    return await stream_speech(state, engine, voice, req, kid, slot)


async def admit(
    state: AppState, request: Request, chars: int
) -> tuple[str | None, str, Response | None]:
    """The per-key limits of one speech request: (key id, session slot, refusal)."""
    kid = key_of(request.scope)
    slot = "http-" + uuid.uuid4().hex
    if kid is None:
        return kid, slot, None
    refused = await admission.take_slot(state, kid, slot, chars=chars)
    if refused is None:
        return kid, slot, None
    state.metrics.errors.labels(refused.code).inc()
    headers = None if refused.retry_after_s is None else {"Retry-After": str(refused.retry_after_s)}
    kind = "rate_limit_error" if refused.http_status == 429 else "server_error"
    return (
        kid,
        slot,
        error_response(
            refused.http_status,
            refused.message,
            kind,
            code=refused.limit or refused.code,
            headers=headers,
        ),
    )


async def stream_speech(
    state: AppState, engine: str, voice: str, req: SpeechRequest, kid: str | None, slot: str
) -> Response:
    """Synthesize ``req.input`` and stream it in ``req.response_format``; releases the
    key's session ``slot`` when done (also used by the voice preview).

    The request is a conversation like any WebSocket session's (server/conversation):
    start, the whole input, end. So it has the same chunker, worker, limits and engine
    fallback; the pipeline's frames go into the file's container as they come.
    """
    file = file_encoder(req.response_format)
    conv = Conversation(
        "http-" + uuid.uuid4().hex,
        state.settings,
        state.workers,
        state.metrics,
        state.chunk_policy,
        protocol="http",
    )
    frames = file.frames
    out = p.OutputFormat(
        encoding="opus" if frames.encoding == "opus" else "pcm_s16le",
        sample_rate=frames.sample_rate,
        frame_ms=frames.frame_samples * 1000 // frames.sample_rate,
    )
    try:
        spec = setup.resolve(
            state.settings,
            state.workers,
            # One of OpenAI's model names names no engine: a language then picks its own
            # (language_voices; the server's engine otherwise).
            engine if req.model in state.workers else None,
            voice or None,
            req.language,
            req.speed,
            out,
            encoder=frames,
            options=req.engine_options,
        )
        conv.start(spec)
        conv.text(req.input)  # the same limits as a session's (max_buffered_chars)
        conv.end()
    except p.ProtocolError as exc:
        conv.close()
        if kid is not None:
            await admission.release_slot(state, kid, slot)
        state.metrics.errors.labels(exc.code).inc()
        return error_response(400, exc.message, param=_param(exc), code=exc.code)
    body = _SpeechBody(state, conv, file, kid, slot, req)
    if not req.stream:
        return await body.whole(MEDIA_TYPES[req.response_format])
    if req.stream_format == "sse":
        return StreamingResponse(
            body.sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    return StreamingResponse(body.audio(), media_type=MEDIA_TYPES[req.response_format])


def _param(exc: p.ProtocolError) -> str:
    """The request field a stream set-up refusal is about."""
    if "voice" in exc.code:
        return "voice"
    if exc.code == "unsupported_language":
        return "language"
    return "engine_options" if exc.message.startswith("engine_options") else "input"


class _SpeechBody:
    """The response body of one speech request: the conversation's frames, in a file."""

    def __init__(
        self,
        state: AppState,
        conv: Conversation,
        file: FileEncoder,
        kid: str | None,
        slot: str,
        req: SpeechRequest,
    ) -> None:
        self.state = state
        self.conv = conv
        self.file = file
        self.kid = kid
        self.slot = slot
        self.req = req
        self.completed = False
        self.failed: str | None = None
        self._ready = asyncio.Event()
        conv.notify = self._ready.set
        self._t0 = time.perf_counter()

    async def audio(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._file():
                yield data
        finally:
            count_audio(self.conv.audio_s_sent)  # voxwire_http_audio_seconds, by route
            self.conv.close()  # a client that went away: its queued work goes
            if self.kid is not None:
                await admission.release_slot(self.state, self.kid, self.slot)
            log.info(
                "speech_end",
                engine=self.conv.engine_name,
                format=self.req.response_format,
                chars=len(self.req.input),
                completed=self.completed,
                duration_s=round(time.perf_counter() - self._t0, 3),
            )

    async def _file(self) -> AsyncIterator[bytes]:
        conv, file = self.conv, self.file
        while True:
            frames, failed = self._take()
            if frames:
                data = await asyncio.to_thread(file.push, frames)
                for f in frames:
                    conv.sent(len(f))
                if data:
                    yield data
            if failed is not None:
                # Headers are gone: all we can do is end the body early and say why.
                log.error("speech_engine_failed", code=failed.code, message=failed.message)
                self.failed = f"{failed.code}: {failed.message}"
                return
            if frames:
                continue
            if conv.close_after is not None:
                assert conv.spec is not None
                tail = await asyncio.to_thread(file.finish, conv.spec.pipeline.end_trim)
                if tail:
                    yield tail
                self.completed = True
                return
            self._ready.clear()
            await self._ready.wait()

    def _take(self) -> tuple[list[bytes], p.Error | None]:
        """The frames waiting in the outbox, up to an engine failure (events that are
        not failures — ready, segments, a fallback notice — are not for HTTP)."""
        frames: list[bytes] = []
        while (out := self.conv.pop()) is not None:
            is_frame, item = out
            if is_frame:
                assert isinstance(item, bytes)
                frames.append(item)
            elif isinstance(item, p.Error) and item.code != "engine_fallback":
                return frames, item
        return frames, None

    async def whole(self, media_type: str) -> Response:
        """The file in one response (``stream: false``); its size bounded by the input's
        (max_input_chars and the engines' audio budget per character)."""
        parts = [data async for data in self.audio()]
        if not self.completed:
            return error_response(
                500,
                f"synthesis failed before the end of the input ({self.failed or 'cancelled'})",
                "server_error",
                code="engine_error",
            )
        return Response(b"".join(parts), media_type=media_type)

    async def sse(self) -> AsyncIterator[bytes]:
        async for data in self.audio():
            delta = SseDelta(audio=base64.b64encode(data).decode())
            yield b"data: " + _json.encode(delta) + b"\n\n"
        if not self.completed:
            return
        n = len(self.req.input)
        done = SseDone(usage=Usage(input_tokens=n, output_tokens=0, total_tokens=n))
        yield b"data: " + _json.encode(done) + b"\n\n"
