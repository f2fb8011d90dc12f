"""Bodies of the HTTP routes' JSON responses (GET /v1/engines, /health; the voices
routes' are in server.voices.responses and server.voices.schema).

They live apart from server.openapi so that the routes can use them without
importing the module that builds the whole OpenAPI document (and everything it
describes); server.openapi lists them among the document's schemas.
"""

from __future__ import annotations

import msgspec

from server.engines.base import EngineInfo


class EnginesResponse(msgspec.Struct, kw_only=True):
    default: str
    engines: list[EngineInfo]


class Health(msgspec.Struct, kw_only=True):
    status: str
    error: str | None = None
