"""The voices API: ``GET/POST /v1/voices``, ``GET/DELETE /v1/voices/{id}``,
``POST /v1/voices/{id}/preview``. Errors use OpenAI's body with a stable ``code``
(docs/voices.md lists them).

An uploaded voice belongs to the API key that uploaded it: every route here answers a
voice another key may not see (``registry.visible``) exactly as an id that does not
exist (404 ``voice_not_found``, absent from the listing)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from redis.exceptions import RedisError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message

from server.auth import key_of
from server.conversation.setup import primary, tag_of
from server.engines.base import EngineError, VoiceInfo, to_pcm16
from server.errors import error_response
from server.speech import SpeechRequest, admit, stream_speech
from server.state.voices import VoiceMeta, VoiceStoreFull, now
from server.voices import registry, upload
from server.voices.registry import ensure_voice as ensure_voice
from server.voices.responses import VoicesResponse
from server.voices.schema import PreviewRequest, UploadInfo, Voice, VoiceDeleted

if TYPE_CHECKING:
    from server.appstate import AppState
    from server.config import Settings

log = structlog.get_logger("voxwire.voices")

PREVIEW_TEXT = "Hello! This is how I sound. Do you like my new voice?"
# Room for the form's other fields and the multipart framing on top of the audio.
_FORM_OVERHEAD = 64 * 1024
_json = msgspec.json.Encoder()
_preview_decoder = msgspec.json.Decoder(PreviewRequest)


def limits_of(settings: Settings) -> upload.UploadLimits:
    return upload.UploadLimits(
        max_bytes=settings.voice_max_bytes,
        min_s=settings.voice_min_s,
        max_s=settings.voice_max_s,
        silence_dbfs=settings.voice_silence_dbfs,
        target_dbfs=settings.voice_target_dbfs,
        peak_dbfs=settings.voice_peak_dbfs,
        max_name_chars=settings.voice_max_name_chars,
        max_transcript_chars=settings.voice_max_transcript_chars,
    )


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.voxwire
    return state


def _ok(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _json.encode(body), status_code=status, media_type="application/json", headers=headers
    )


def _refuse(exc: upload.UploadError) -> Response:
    return error_response(exc.status, exc.message, param=exc.param, code=exc.code)


def _store_down() -> Response:
    return error_response(
        503,
        "the voice store (Redis) is not reachable; retry shortly",
        "server_error",
        code="state_unavailable",
    )


def _not_found(voice_id: str) -> Response:
    """The answer for an id that does not exist for the caller: never uploaded, deleted,
    or another key's voice (the same words, so none of these can be told apart)."""
    shown = voice_id if len(voice_id) <= 80 else voice_id[:80] + "…"
    return error_response(404, f"there is no voice {shown!r}", param="id", code="voice_not_found")


async def _visible_meta(request: Request, voice_id: str) -> VoiceMeta | Response:
    """The uploaded voice ``voice_id`` if the caller's key may see it, else the 404 (or
    the 503 when the store cannot be read)."""
    state = _state(request)
    try:
        meta = await state.voices.meta(voice_id)
    except (RedisError, OSError):
        return _store_down()
    if meta is None or not registry.visible(state, meta, key_of(request.scope)):
        return _not_found(voice_id)
    return meta


def _voice(meta: VoiceMeta) -> Voice:
    return Voice(
        id=meta.id,
        name=meta.name,
        engine=meta.engine,
        language=meta.language,
        sample_rate=meta.sample_rate,
        builtin=False,
        transcript=meta.transcript,
        created=meta.created,
        duration_s=meta.duration_s,
    )


def upload_info(state: AppState) -> UploadInfo | None:
    engines = registry.cloning_engines(state)
    if not engines:
        return None
    name = "f5" if "f5" in engines else sorted(engines)[0]
    s = state.settings
    return UploadInfo(
        engine=name,
        max_bytes=s.voice_max_bytes,
        min_s=s.voice_min_s,
        max_s=s.voice_max_s,
        formats=list(upload.FORMATS),
        languages=list(state.engines[name].info().languages),
        max_name_chars=s.voice_max_name_chars,
        max_transcript_chars=s.voice_max_transcript_chars,
    )


async def list_voices(request: Request) -> Response:
    state = _state(request)
    kid = key_of(request.scope)
    try:
        stored = [m for m in await state.voices.list() if registry.visible(state, m, kid)]
    except (RedisError, OSError):
        return _store_down()
    # The engines also list the uploaded voices this node has cached (anyone's): only
    # the store's answer, filtered by owner, says which of those the caller may see.
    voices = [v for e in state.engines.values() for v in registry.server_voices(e)]
    voices += [
        VoiceInfo(
            id=m.id,
            name=m.name,
            engine=m.engine,
            language=m.language,
            sample_rate=m.sample_rate,
            builtin=False,
        )
        for m in stored
    ]
    # ?language=de (or de-DE) and ?engine=piper narrow the list; a filter that matches
    # nothing gives an empty list, as any filter would.
    language = request.query_params.get("language")
    engine = request.query_params.get("engine")
    if language:
        voices = [v for v in voices if _speaks(v, language)]
    if engine:
        voices = [v for v in voices if v.engine == engine]
    body = VoicesResponse(default=state.settings.voice, voices=voices, upload=upload_info(state))
    return _ok(body)


def _speaks(v: VoiceInfo, language: str) -> bool:
    """``language`` is the voice's (``de``), or its locale (``de-DE``, ``de_DE``)."""
    asked = tag_of(language)
    if "-" not in asked:
        return primary(v.language) == asked
    return tag_of(v.locale or v.language) == asked


async def get_voice(request: Request) -> Response:
    state = _state(request)
    voice_id: str = request.path_params["voice_id"]
    if registry.is_uploaded_id(voice_id):
        found = await _visible_meta(request, voice_id)
        return found if isinstance(found, Response) else _ok(_voice(found))
    for engine in state.engines.values():
        for v in engine.voices():
            if v.id == voice_id:
                return _ok(
                    Voice(
                        id=v.id,
                        name=v.name,
                        engine=v.engine,
                        language=v.language,
                        sample_rate=v.sample_rate,
                        builtin=v.builtin,
                        locale=v.locale,
                        quality=v.quality,
                        speakers=v.speakers,
                    )
                )
    return _not_found(voice_id)


async def delete_voice(request: Request) -> Response:
    state = _state(request)
    voice_id: str = request.path_params["voice_id"]
    if not registry.is_uploaded_id(voice_id):
        if registry.engine_of(state, voice_id) is not None:
            return error_response(
                409,
                f"voice {voice_id!r} is not an uploaded voice (it comes with the server) and "
                "cannot be deleted",
                param="id",
                code="voice_not_deletable",
            )
        return _not_found(voice_id)
    meta = await _visible_meta(request, voice_id)
    if isinstance(meta, Response):
        return meta
    kid = key_of(request.scope)
    if not registry.deletable(meta, kid):  # visible to all (voice_sharing: shared)
        return error_response(
            403,
            f"voice {voice_id!r} belongs to another API key and is shared with yours "
            "(voice_sharing: shared); only the key that uploaded it can delete it",
            "permission_error",
            param="id",
            code="voice_not_owned",
        )
    try:
        found = await state.voices.delete(voice_id)
    except (RedisError, OSError):
        return _store_down()
    if not found:
        return _not_found(voice_id)
    log.info("voice_deleted", voice=voice_id, key_id=kid)
    return _ok(VoiceDeleted(id=voice_id))


async def _decode(data: bytes, limits: upload.UploadLimits) -> upload.Decoded:
    """``upload.prepare`` on a thread. It names every problem it knows of; anything else
    FFmpeg (PyAV) throws at a hostile file is still the file's fault, so it is a 422 that
    names the error, never a 500 (and logged with its traceback, to be named properly)."""
    try:
        return await asyncio.to_thread(upload.prepare, data, limits)
    except upload.UploadError:
        raise
    except Exception as exc:
        log.exception("voice_decode_failed", error=f"{type(exc).__name__}: {exc}")
        raise upload.UploadError(
            422,
            "audio_undecodable",
            f"the audio does not decode ({type(exc).__name__}: {exc}); accepted formats: "
            f"{upload.FORMATS_TEXT}",
            "audio",
        ) from None


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it is longer than ``limit`` (chunked uploads too)."""
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            return None
    return bytes(body)


def _replay(body: bytes) -> Callable[[], Awaitable[Message]]:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _field(form: Any, name: str) -> str:
    value = form.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise upload.UploadError(
            400, "form_invalid", f"field {name!r} must be text, not a file", name
        )
    return value


async def create_voice(request: Request) -> Response:
    state = _state(request)
    limits = limits_of(state.settings)
    allowance = limits.max_bytes + _FORM_OVERHEAD
    declared = request.headers.get("content-length", "")
    try:
        if declared.isdigit() and int(declared) > allowance:
            raise upload.UploadError(
                413,
                "audio_too_large",
                f"the request is {int(declared)} bytes; uploads are limited to "
                f"{limits.max_bytes} bytes of audio ({limits.max_bytes / 1048576:.1f} MiB)",
                "audio",
            )
        ctype = request.headers.get("content-type", "")
        if not ctype.lower().startswith("multipart/form-data"):
            raise upload.UploadError(
                400,
                "form_invalid",
                f"the body must be multipart/form-data (fields audio, name, transcript, "
                f"language, engine), not {ctype.split(';')[0] or 'nothing'!r}",
            )
        body = await _read_body(request, allowance)
        if body is None:
            raise upload.UploadError(
                413,
                "audio_too_large",
                f"the request is longer than {allowance} bytes; uploads are limited to "
                f"{limits.max_bytes} bytes of audio ({limits.max_bytes / 1048576:.1f} MiB)",
                "audio",
            )
        try:
            form = await Request(request.scope, _replay(body)).form(
                max_files=1, max_fields=8, max_part_size=_FORM_OVERHEAD
            )
        except HTTPException as exc:
            raise upload.UploadError(
                400, "form_invalid", f"the multipart form cannot be read: {exc.detail}"
            ) from None
        try:
            audio = form.get("audio")
            if not isinstance(audio, UploadFile):
                raise upload.UploadError(
                    400,
                    "audio_missing",
                    "no audio: send the reference recording as the file field 'audio'",
                    "audio",
                )
            data = await audio.read()
            engines = {n: n in registry.cloning_engines(state) for n in state.engines}
            cloner = registry.cloning_engines(state)
            langs = list(state.engines["f5"].info().languages) if "f5" in cloner else []
            fields = upload.check_fields(
                _field(form, "name"),
                _field(form, "transcript"),
                _field(form, "language"),
                _field(form, "engine"),
                limits,
                engines,
                langs,
            )
        finally:
            await form.close()
        upload.check_size(len(data), limits)
        if not state.ready:
            return error_response(
                503, "engines are still loading; retry shortly", "server_error", code="not_ready"
            )
        decoded = await _decode(data, limits)
        engine = cloner[fields.engine]
        voice_id = "v_" + secrets.token_urlsafe(12)
        try:
            prepared = await asyncio.to_thread(
                engine.prepare_uploaded,
                voice_id,
                fields.name,
                fields.language,
                fields.transcript,
                decoded.audio,
            )
        except ValueError as exc:  # F5's VoiceError: the reference cannot be used
            msg = str(exc).removeprefix(f"{voice_id}: ")
            raise upload.UploadError(422, "reference_unusable", msg, "audio") from None
        except EngineError as exc:
            return error_response(503, exc.message, "server_error", code=exc.code)
    except upload.UploadError as exc:
        state.metrics.errors.labels(exc.code).inc()
        log.info("voice_upload_refused", code=exc.code, message=exc.message)
        return _refuse(exc)
    meta = VoiceMeta(
        id=voice_id,
        name=fields.name,
        engine=fields.engine,
        language=fields.language,
        transcript=fields.transcript,
        created=now(),
        duration_s=round(decoded.duration_s, 3),
        owner=key_of(request.scope),
    )
    try:
        await state.voices.put(meta, to_pcm16(decoded.audio))
    except VoiceStoreFull as exc:
        return error_response(
            507,
            f"{exc.count} voices are stored and the limit is {exc.limit} (setting "
            "voice_max_count); delete one first",
            code="voice_limit_reached",
        )
    except (RedisError, OSError):
        return _store_down()
    state.voices.cache.put(voice_id, prepared, meta)
    log.info(
        "voice_created",
        voice=voice_id,
        key_id=meta.owner,
        engine=fields.engine,
        language=fields.language,
        format=f"{decoded.container}/{decoded.codec}",
        duration_s=meta.duration_s,
    )
    return _ok(_voice(meta), 201, headers={"Location": f"/v1/voices/{voice_id}"})


async def _preview_text(request: Request, limit: int) -> str:
    ctype = request.headers.get("content-type", "").lower()
    text: str | None = None
    if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        try:
            async with request.form(max_files=0, max_fields=4) as form:
                text = _field(form, "text")
        except HTTPException as exc:
            raise upload.UploadError(
                400, "form_invalid", f"the form cannot be read: {exc.detail}"
            ) from None
    else:
        raw = await _read_body(request, limit * 4 + 1024)
        if raw is None:
            raise upload.UploadError(
                422, "text_too_long", f"the preview text is longer than {limit} characters"
            )
        if raw.strip():
            try:
                text = _preview_decoder.decode(raw).text
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise upload.UploadError(
                    400, "form_invalid", f'the body must be JSON {{"text": "…"}}: {exc}'
                ) from None
    text = " ".join((text or "").split()) or PREVIEW_TEXT
    if len(text) > limit:
        raise upload.UploadError(
            422,
            "text_too_long",
            f"the preview text is {len(text)} characters; at most {limit}",
            "text",
        )
    return text


async def preview_voice(request: Request) -> Response:
    """A short sample of the voice, streamed as Ogg Opus while it is synthesized."""
    state = _state(request)
    voice_id: str = request.path_params["voice_id"]
    if not state.ready:
        return error_response(
            503, "engines are still loading; retry shortly", "server_error", code="not_ready"
        )
    try:
        text = await _preview_text(request, state.settings.voice_preview_max_chars)
    except upload.UploadError as exc:
        return _refuse(exc)
    if registry.is_uploaded_id(voice_id):
        meta = await _visible_meta(request, voice_id)
        if isinstance(meta, Response):
            return meta
        problem = await ensure_voice(state, meta.engine, voice_id, key_of(request.scope))
        if problem is not None:
            code, message = problem
            if code == "unknown_voice":
                return error_response(422, message, param="id", code=code)
            return error_response(503, message, "server_error", code=code)
        engine_name = meta.engine
    else:
        engine = registry.engine_of(state, voice_id)
        if engine is None:
            return _not_found(voice_id)
        engine_name = engine.name
    kid, slot, refused = await admit(state, request, len(text))
    if refused is not None:
        return refused
    req = SpeechRequest(model=engine_name, input=text, voice=voice_id, response_format="opus")
    return await stream_speech(state, engine_name, voice_id, req, kid, slot)


ROUTES = [
    Route("/v1/voices", list_voices, methods=["GET"]),
    Route("/v1/voices", create_voice, methods=["POST"]),
    Route("/v1/voices/{voice_id}", get_voice, methods=["GET"]),
    Route("/v1/voices/{voice_id}", delete_voice, methods=["DELETE"]),
    Route("/v1/voices/{voice_id}/preview", preview_voice, methods=["POST"]),
]
