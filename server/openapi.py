"""The OpenAPI 3.1 document of the HTTP routes, generated from the msgspec types.

Served at ``/openapi.json`` and rendered by the page at ``/docs`` (plain files in
``static/docs``, nothing fetched from the internet). The WebSocket protocol has
its own document, docs/protocol.md, with a JSON Schema.
"""

from __future__ import annotations

from typing import Any

import msgspec

from server import __version__
from server.access import TokenRequest, TokenResponse
from server.responses import EnginesResponse, Health
from server.speech import (
    MAX_INPUT_CHARS,
    ErrorBody,
    ModelList,
    SpeechRequest,
    SseDelta,
    SseDone,
)
from server.streaming.containers import MEDIA_TYPES
from server.voices.responses import VoicesResponse
from server.voices.schema import PreviewRequest, Voice, VoiceDeleted

_TYPES: list[Any] = [
    SpeechRequest,
    SseDelta,
    SseDone,
    ErrorBody,
    ModelList,
    TokenRequest,
    TokenResponse,
    EnginesResponse,
    VoicesResponse,
    Voice,
    VoiceDeleted,
    PreviewRequest,
    Health,
]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


# duplicate_header; missing or bad key; origin/host refused; rate limited; Redis down or
# access rules lost
_ACCESS_ERRORS = frozenset({400, 401, 403, 429, 503})


def _errors(*codes: int) -> dict[str, Any]:
    words = {
        400: "Invalid request (also: a duplicated Authorization or Origin header)",
        401: "Missing or invalid API key or token",
        403: "Not allowed (also: an Origin equal to a Host the server is not known by)",
        404: "No such model or voice",
        409: "The voice cannot be deleted (it comes with the server)",
        413: "The body is larger than max_body_bytes (uploads: voice_max_bytes)",
        415: "The audio is not in an accepted format (the message names them)",
        422: "The upload or its audio was refused; `code` says why (docs/voices.md)",
        507: "The voice store is full (voice_max_count)",
        429: "A per-key limit was reached (the Retry-After header says when it resets)",
        503: "Engines still loading, the state store (Redis) unreachable, or access rules "
        "lost (API keys expected but gone from Redis)",
    }
    # what the access middleware can answer on any route that needs a key
    every = set(codes) | _ACCESS_ERRORS
    return {str(c): _json("ErrorBody", words[c]) for c in sorted(every)}


def document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        _TYPES, ref_template="#/components/schemas/{name}"
    )
    secured: list[dict[str, list[str]]] = [{"bearer": []}, {"token": []}]
    binary = {"type": "string", "format": "binary"}
    voice_id = {
        "name": "voice_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "A voice id from GET /v1/voices (uploaded voices: `v_…`)",
        "example": "en_US-joe-medium",
    }
    audio: dict[str, dict[str, Any]] = {
        mt: {"schema": binary} for mt in sorted(set(MEDIA_TYPES.values()))
    }
    # An event stream's schema describes each event (OpenAPI 3.2 calls it itemSchema)
    audio["text/event-stream"] = {
        "schema": {
            "type": "object",
            "description": 'With stream_format=sse: `data: {"type":"speech.audio.delta",'
            '"audio":"<base64>"}` events, then `speech.audio.done` with usage.',
            "required": ["data"],
            "properties": {
                "event": {"type": "string"},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {"oneOf": [_ref("SseDelta"), _ref("SseDone")]},
                },
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "voxwire HTTP API",
            "version": __version__,
            "description": "Real-time text-to-speech. The streaming WebSocket protocol "
            "(`/v1/stream`) is described in docs/protocol.md. When API keys are configured, "
            "every route but /health and the static pages needs `Authorization: Bearer "
            "<key>` or `?token=` from POST /v1/tokens.",
        },
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "token": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "token",
                    "description": "A short-lived token from POST /v1/tokens "
                    "(for browsers; never put an API key in a URL).",
                },
            },
        },
        "paths": {
            "/v1/audio/speech": {
                "post": {
                    "operationId": "createSpeech",
                    "summary": "Speak text (OpenAI-compatible)",
                    "description": f"`input` up to {MAX_INPUT_CHARS} characters. The body is "
                    "streamed as the sentences are synthesized; a client that disconnects "
                    "cancels the work.",
                    "security": secured,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("SpeechRequest")}},
                    },
                    "responses": {
                        "200": {"description": "Audio in the requested format", "content": audio},
                        **_errors(400, 401, 404, 413, 429, 503),
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "operationId": "listModels",
                    "summary": "Engines, as OpenAI models",
                    "security": secured,
                    "responses": {"200": _json("ModelList", "The models"), **_errors(401, 429)},
                }
            },
            "/v1/engines": {
                "get": {
                    "operationId": "listEngines",
                    "summary": "Engines, their state and capabilities",
                    "description": "Per engine: languages, voices, whether it clones and "
                    "gives word timings, and the engine_options it honours with its "
                    "defaults (null: the voice's own); `options` gives every option's "
                    "type and bounds, `outputs` the encodings and rates.",
                    "security": secured,
                    "responses": {"200": _json("EnginesResponse", "Engines"), **_errors(401, 429)},
                }
            },
            "/v1/voices": {
                "get": {
                    "operationId": "listVoices",
                    "summary": "Voices of every engine, uploaded ones included",
                    "description": "`upload` is present where this node can clone voices: "
                    "the limits and formats `POST /v1/voices` accepts.",
                    "security": secured,
                    "parameters": [
                        {
                            "name": "language",
                            "in": "query",
                            "required": False,
                            "description": "Only voices of this language (de) or locale (de-DE)",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "engine",
                            "in": "query",
                            "required": False,
                            "description": "Only this engine's voices",
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": _json("VoicesResponse", "Voices"),
                        **_errors(401, 429, 503),
                    },
                },
                "post": {
                    "operationId": "createVoice",
                    "summary": "Upload a voice to clone (reference audio and its transcript)",
                    "description": "Accepted audio: WAV (PCM), FLAC, MP3, Ogg (Opus or Vorbis), "
                    "WebM (Opus or Vorbis), found from the bytes; 3–30 s by default "
                    "(voice_min_s, voice_max_s), at most voice_max_bytes, not silent. The "
                    "voice is stored for every node; its id is made by the server.",
                    "security": secured,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["audio", "name", "transcript"],
                                    "properties": {
                                        "audio": binary,
                                        "name": {"type": "string"},
                                        "transcript": {"type": "string"},
                                        "language": {"type": "string", "default": "en"},
                                        "engine": {"type": "string", "default": "f5"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": _json("Voice", "The new voice"),
                        **_errors(400, 401, 413, 415, 422, 429, 503, 507),
                    },
                },
            },
            "/v1/voices/{voice_id}": {
                "parameters": [voice_id],
                "get": {
                    "operationId": "getVoice",
                    "summary": "One voice",
                    "security": secured,
                    "responses": {"200": _json("Voice", "The voice"), **_errors(401, 404, 429)},
                },
                "delete": {
                    "operationId": "deleteVoice",
                    "summary": "Delete an uploaded voice, on every node",
                    "security": secured,
                    "responses": {
                        "200": _json("VoiceDeleted", "Deleted"),
                        **_errors(401, 404, 409, 429, 503),
                    },
                },
            },
            "/v1/voices/{voice_id}/preview": {
                "parameters": [voice_id],
                "post": {
                    "operationId": "previewVoice",
                    "summary": "A short sample of the voice (Ogg Opus, streamed)",
                    "description": "Speaks `text` (at most voice_preview_max_chars; a "
                    "sentence of the server's when absent), sent as JSON or a form field.",
                    "security": secured,
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": _ref("PreviewRequest")}},
                    },
                    "responses": {
                        "200": {
                            "description": "Ogg Opus audio",
                            "content": {"audio/ogg": {"schema": binary}},
                        },
                        **_errors(400, 401, 404, 413, 422, 429, 503),
                    },
                },
            },
            "/v1/tokens": {
                "post": {
                    "operationId": "mintToken",
                    "summary": "Trade an API key for a short-lived token (for browsers)",
                    "security": [{"bearer": []}],
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": _ref("TokenRequest")}},
                    },
                    "responses": {
                        "200": _json("TokenResponse", "The token"),
                        **_errors(400, 401, 403, 413, 429, 503),
                    },
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "summary": "200 once engines are loaded, 503 before",
                    "security": [],
                    "responses": {
                        "200": _json("Health", "Ready"),
                        "503": _json(
                            "Health", "Loading, failed to load, draining, or access rules lost"
                        ),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics",
                    "security": secured,
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_errors(401, 429),
                    },
                }
            },
        },
    }
