"""Bodies of the HTTP routes' JSON responses (GET /v1/engines, /health; the voices
routes' are in server.voices.responses and server.voices.schema).

They live apart from server.openapi so that the routes can use them without
importing the module that builds the whole OpenAPI document (and everything it
describes); server.openapi lists them among the document's schemas.
"""

from __future__ import annotations

from typing import Literal, get_args

import msgspec

from server import protocol as p
from server.engines.base import EngineInfo


class OptionRange(msgspec.Struct, kw_only=True):
    """An engine option's type and bounds (``start.engine_options``, the speech API's
    ``engine_options``); which engine honours it, and its default, is in ``engines``."""

    name: str
    type: Literal["number", "integer", "string"]
    min: float | None = None
    max: float | None = None
    max_length: int | None = None


class Outputs(msgspec.Struct, kw_only=True):
    """What every engine's audio can be encoded as on the WebSocket (any rate between
    the bounds; Opus at 8, 12, 16, 24 or 48 kHz, G.711 at 8 kHz)."""

    encodings: list[str]
    min_rate: int = p.MIN_RATE
    max_rate: int = p.MAX_RATE


class EnginesResponse(msgspec.Struct, kw_only=True):
    default: str
    engines: list[EngineInfo]
    options: list[OptionRange]
    outputs: Outputs


def option_ranges() -> list[OptionRange]:
    """EngineOptions' fields with the bounds the protocol enforces (from its Meta)."""
    out = []
    info = msgspec.inspect.type_info(p.EngineOptions)
    assert isinstance(info, msgspec.inspect.StructType)
    for f in info.fields:
        assert isinstance(f.type, msgspec.inspect.UnionType)  # every option is X | None
        t = next(t for t in f.type.types if not isinstance(t, msgspec.inspect.NoneType))
        if isinstance(t, msgspec.inspect.StrType):
            out.append(OptionRange(name=f.name, type="string", max_length=t.max_length))
        elif isinstance(t, msgspec.inspect.IntType | msgspec.inspect.FloatType):
            kind: Literal["number", "integer"] = (
                "integer" if isinstance(t, msgspec.inspect.IntType) else "number"
            )
            out.append(OptionRange(name=f.name, type=kind, min=t.ge, max=t.le))
    return out


def outputs() -> Outputs:
    return Outputs(encodings=list(get_args(p.Encoding)))


class Health(msgspec.Struct, kw_only=True):
    status: str
    error: str | None = None
