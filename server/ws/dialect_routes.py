"""The dialects' WebSocket routes: build the codec from the URL, then run the edge.

A URL the dialect cannot serve (a bad ``output_format``, ``encoding`` or
``sample_rate``) is refused the dialect's way: Deepgram answers the handshake
with HTTP 400 and a ``dg-error`` header, as its clients expect; the others
accept, say the error in their own shape and close with 1008.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from starlette.responses import Response
from starlette.websockets import WebSocket

from server.dialects import intents as i
from server.dialects.cartesia import CartesiaCodec
from server.dialects.deepgram import DeepgramCodec
from server.dialects.elevenlabs import ElevenLabsCodec
from server.speech import OPENAI_MODELS
from server.voices.ids import is_uploaded_id
from server.ws.dialect import DialectSession

if TYPE_CHECKING:
    from server.appstate import AppState


def _state(ws: WebSocket) -> AppState:
    st: AppState = ws.app.state.voxwire
    return st


def _query(ws: WebSocket) -> dict[str, str]:
    return dict(ws.query_params)


async def _run(ws: WebSocket, codec: i.Codec) -> None:
    pending = bool((ws.scope.get("state") or {}).get("key_pending"))
    await DialectSession(ws, _state(ws), codec, pending_key=pending).run()


async def _refuse_after_accept(ws: WebSocket, render: list[i.Wire], code: int) -> None:
    await ws.accept()
    for w in render:
        await (ws.send_bytes(w) if isinstance(w, bytes) else ws.send_text(w))
    await ws.close(code)


async def elevenlabs_single(ws: WebSocket) -> None:
    await _elevenlabs(ws, multi=False)


async def elevenlabs_multi(ws: WebSocket) -> None:
    await _elevenlabs(ws, multi=True)


async def _elevenlabs(ws: WebSocket, multi: bool) -> None:
    voice = ws.path_params["voice_id"]
    try:
        codec = ElevenLabsCodec(voice, _query(ws), multi)
    except i.DialectError as err:
        _state(ws).metrics.errors.labels(err.code).inc()
        body = msgspec.json.encode(
            {"message": err.message, "error": err.code, "code": err.close_code}
        ).decode()
        await _refuse_after_accept(ws, [body], err.close_code or 1008)
        return
    await _run(ws, codec)


async def deepgram(ws: WebSocket) -> None:
    st = _state(ws)
    voices = _Voices({v.id for w in st.workers.values() for v in w.engine.voices()})
    try:
        # a model may be anything GET /v1/models lists (the session maps it as that does)
        codec = DeepgramCodec(_query(ws), voices, {*st.workers, *OPENAI_MODELS})
    except i.DialectError as err:
        st.metrics.errors.labels(err.code).inc()
        body = msgspec.json.encode(
            {"err_code": err.code, "err_msg": err.message, "description": err.message}
        )
        resp = Response(
            body,
            status_code=400,
            media_type="application/json",
            headers={"dg-error": err.message},
        )
        await ws.send_denial_response(resp)
        return
    await _run(ws, codec)


class _Voices(set[str]):
    """The built-in voices, and any uploaded voice id (the session checks that one)."""

    def __contains__(self, voice: object) -> bool:
        return isinstance(voice, str) and (super().__contains__(voice) or is_uploaded_id(voice))


async def cartesia(ws: WebSocket) -> None:
    await _run(ws, CartesiaCodec())
