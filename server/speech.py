"""OpenAI-compatible HTTP speech: ``POST /v1/audio/speech`` and ``GET /v1/models``.

The request goes through the same chunker and engine worker as a WebSocket
session; the worker's frames (16-bit PCM at the file's rate) are turned into the
requested file format off the event loop and streamed as each sentence is
synthesized. A client that disconnects cancels the queued work.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec
import numpy as np
import structlog
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from server.auth import key_of
from server.engines.worker import (
    ChunkDone,
    EngineFailed,
    Job,
    Output,
    UtteranceDone,
)
from server.streaming.chunker import SentenceChunker
from server.streaming.containers import MEDIA_TYPES, ResponseFormat, file_encoder
from server.streaming.encoder import PcmS16Encoder
from server.streaming.pipeline import AudioPipeline
from server.voices.registry import ensure_voice, server_voices

if TYPE_CHECKING:
    from server.app import AppState
    from server.engines.worker import EngineWorker

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
    response_format: ResponseFormat = "mp3"
    speed: Annotated[float, msgspec.Meta(ge=0.25, le=4.0)] = 1.0
    instructions: str | None = None  # accepted; the embedded engines have no use for it
    stream_format: Literal["audio", "sse"] = "audio"


class ErrorDetail(msgspec.Struct, kw_only=True):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(msgspec.Struct, kw_only=True):
    """OpenAI's error shape."""

    error: ErrorDetail


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


def error_response(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = ErrorBody(error=ErrorDetail(message=message, type=type_, param=param, code=code))
    return Response(
        _json.encode(body), status_code=status, media_type="application/json", headers=headers
    )


def param_of(message: str) -> str | None:
    marker = "at `$."
    if marker in message:
        return message.split(marker, 1)[1].split("`", 1)[0].split(".")[0].split("[")[0]
    if "required field `" in message:
        return message.split("required field `", 1)[1].split("`", 1)[0]
    return None


class _Request:
    """The job owner for one HTTP request (the worker's view of a session)."""

    def __init__(self, worker: EngineWorker, rate: int) -> None:
        self.session_id = "http-" + uuid.uuid4().hex
        self.generation = 0
        self.pipeline_generation = 0
        self.pipeline = AudioPipeline(worker.engine.sample_rate, PcmS16Encoder(rate, 20))
        self.items: asyncio.Queue[list[Output]] = asyncio.Queue()
        self.unsent_frames = 0
        self.worker = worker

    def can_take_work(self) -> bool:
        return self.unsent_frames * 0.02 < _MAX_UNSENT_S

    def wants_chunk_pcm(self) -> bool:
        return False

    def deliver(self, generation: int, items: list[Output]) -> None:
        if generation == self.generation:
            self.unsent_frames += sum(1 for i in items if isinstance(i, bytes))
            self.items.put_nowait(items)


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
        return (
            state.settings.voice
            if engine == state.settings.engine
            else worker.engine.info().default_voice
        )
    return None


async def models(request: Request) -> Response:
    state: AppState = request.app.state.voxwire
    names = list(state.workers) + list(OPENAI_MODELS)
    return Response(
        _json.encode(ModelList(data=[Model(id=n) for n in names])), media_type="application/json"
    )


async def speech(request: Request) -> Response:
    state: AppState = request.app.state.voxwire
    if not state.ready:
        return error_response(
            503, "engines are still loading; retry shortly", "server_error", code="not_ready"
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
    kid, slot, refused = await admit(state, request, len(req.input))
    if refused is not None:
        return refused
    return stream_speech(state, engine, voice, req, kid, slot)


async def admit(
    state: AppState, request: Request, chars: int
) -> tuple[str | None, str, Response | None]:
    """The per-key limits of one speech request: (key id, session slot, refusal)."""
    kid = key_of(request.scope)
    slot = "http-" + uuid.uuid4().hex
    if kid is not None:
        try:
            over = await state.limits.chars(kid, chars) or await state.limits.acquire(kid, slot)
        except (RedisError, OSError):
            return (
                kid,
                slot,
                error_response(
                    503,
                    "the shared state store (Redis) is not reachable; retry shortly",
                    "server_error",
                    code="state_unavailable",
                ),
            )
        if over is not None:
            state.metrics.errors.labels("limit_exceeded").inc()
            return (
                kid,
                slot,
                error_response(
                    429,
                    over.message(),
                    "rate_limit_error",
                    code=over.limit,
                    headers={"Retry-After": str(over.retry_after_s)},
                ),
            )
    return kid, slot, None


def stream_speech(
    state: AppState, engine: str, voice: str, req: SpeechRequest, kid: str | None, slot: str
) -> Response:
    """Synthesize ``req.input`` and stream it in ``req.response_format``; releases the
    key's session ``slot`` when done (also used by the voice preview)."""
    worker = state.workers[engine]
    encoder = file_encoder(req.response_format)
    owner = _Request(worker, encoder.sample_rate)
    chunker = SentenceChunker(state.chunk_policy)
    chunks = chunker.push(req.input) + chunker.flush()
    for i, text in enumerate(chunks):
        worker.submit(
            Job(owner, 0, "chunk", text=text, voice=voice, speed=req.speed, first=i == 0, index=i)
        )
    worker.submit(Job(owner, 0, "end"))
    t0 = time.perf_counter()
    metrics = state.metrics

    completed = False

    async def audio() -> AsyncIterator[bytes]:
        nonlocal completed
        first = True
        done = False
        try:
            while True:
                items = await owner.items.get()
                frames = [i for i in items if isinstance(i, bytes)]
                owner.unsent_frames -= len(frames)
                if frames:
                    worker.wake()
                    pcm = np.frombuffer(b"".join(frames), dtype="<i2")
                    data = await asyncio.to_thread(encoder.push, pcm)
                    if data:
                        if first:
                            metrics.ttfa.labels(engine).observe(time.perf_counter() - t0)
                            first = False
                        yield data
                for item in items:
                    if isinstance(item, EngineFailed):
                        # Headers are gone: all we can do is end the body early and say why.
                        metrics.errors.labels(item.code).inc()
                        log.error("speech_engine_failed", code=item.code, message=item.message)
                        return
                    if isinstance(item, ChunkDone) and item.audio_s > 0:
                        metrics.rtf.labels(engine).observe(item.engine_s / item.audio_s)
                if any(isinstance(i, UtteranceDone) for i in items):
                    tail = await asyncio.to_thread(encoder.finish)
                    if tail:
                        yield tail
                    done = completed = True
                    return
        finally:
            if not done:  # client went away (or engine failed): drop the queued work
                owner.generation += 1
                worker.cancel(owner.session_id)
            if kid is not None:
                with contextlib.suppress(RedisError, OSError):
                    await state.limits.release(kid, slot)
            log.info(
                "speech_end",
                engine=engine,
                format=req.response_format,
                chars=len(req.input),
                completed=done,
                duration_s=round(time.perf_counter() - t0, 3),
            )

    async def sse() -> AsyncIterator[bytes]:
        async for data in audio():
            delta = SseDelta(audio=base64.b64encode(data).decode())
            yield b"data: " + _json.encode(delta) + b"\n\n"
        if not completed:
            return
        n = len(req.input)
        done = SseDone(usage=Usage(input_tokens=n, output_tokens=0, total_tokens=n))
        yield b"data: " + _json.encode(done) + b"\n\n"

    if req.stream_format == "sse":
        return StreamingResponse(
            sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    return StreamingResponse(audio(), media_type=MEDIA_TYPES[req.response_format])
