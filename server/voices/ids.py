"""Which voice ids are uploaded ones, and which voices may be named to anyone.

Kept apart from the registry (which talks to the shared store) so that stream
set-up can use it without importing the state layer.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.engines.base import Engine, VoiceInfo

# "v_" + secrets.token_urlsafe(12): the only shape an uploaded voice id has. Anything
# else never reaches the store.
VOICE_ID = re.compile(r"v_[A-Za-z0-9_-]{16}")


def is_uploaded_id(voice_id: str) -> bool:
    return VOICE_ID.fullmatch(voice_id) is not None


def server_voices(engine: Engine) -> list[VoiceInfo]:
    """``engine``'s voices without the uploaded ones this node has cached: what may be
    named to any caller (``engine.voices()`` also lists other keys' uploaded voices)."""
    return [v for v in engine.voices() if not is_uploaded_id(v.id)]
