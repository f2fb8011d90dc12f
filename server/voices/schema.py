"""The JSON bodies of the voices API (also in the OpenAPI document)."""

from __future__ import annotations

from typing import Annotated

import msgspec


class UploadInfo(msgspec.Struct, kw_only=True):
    """What ``POST /v1/voices`` accepts on this node (present only where it can clone)."""

    engine: str
    max_bytes: int
    min_s: float
    max_s: float
    formats: list[str]
    languages: list[str]
    max_name_chars: int
    max_transcript_chars: int


class Voice(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One voice. Uploaded voices (``builtin: false``, ids ``v_…``) also carry their
    transcript, creation time (Unix seconds) and reference length."""

    id: str
    name: str
    engine: str
    language: str
    sample_rate: int
    builtin: bool
    locale: str | None = None
    quality: str | None = None
    speakers: list[str] | None = None
    transcript: str | None = None
    created: float | None = None
    duration_s: float | None = None


class VoiceDeleted(msgspec.Struct, kw_only=True):
    id: str
    deleted: bool = True


class PreviewRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Optional body of ``POST /v1/voices/{id}/preview`` (JSON, or a form field)."""

    text: Annotated[str, msgspec.Meta(min_length=1)] | None = None
