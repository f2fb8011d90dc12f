"""The body of ``GET /v1/voices``: in the voices package, next to the bodies of the
other voices routes (server.voices.schema), so that the voices API imports no
module outside the package for it (server.responses holds the other routes')."""

from __future__ import annotations

import msgspec

from server.engines.base import VoiceInfo
from server.voices.schema import UploadInfo


class VoicesResponse(msgspec.Struct, kw_only=True, omit_defaults=True):
    default: str
    voices: list[VoiceInfo]
    # present where this node can clone voices (POST /v1/voices); see docs/voices.md
    upload: UploadInfo | None = None
