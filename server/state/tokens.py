"""Resume tokens: ``base64url(json{s, exp}) . base64url(hmac-sha256)``.

A token is bound to one session id and expires; it is what lets a client take its
session over from any node, so every node must verify it with the same secret:
``token_secret`` when set, else one random secret kept in Redis (the first node to
start makes it), else (memory state: one node) a random one per process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import TYPE_CHECKING

from server.auth import _b64, _unb64

if TYPE_CHECKING:
    from redis.asyncio import Redis


class ResumeTokenError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ResumeTokens:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def mint(
        self, session_id: str, ttl_s: float, key_id: str | None = None, now: float | None = None
    ) -> str:
        """A token for ``session_id``, usable only with the same API key (``key_id``)."""
        exp = (time.time() if now is None else now) + ttl_s
        claims = json.dumps(
            {"s": session_id, "k": key_id, "exp": round(exp, 3)}, separators=(",", ":")
        )
        payload = _b64(claims.encode())
        return f"{payload}.{self._sign(payload)}"

    def verify(
        self, token: str, session_id: str, key_id: str | None = None, now: float | None = None
    ) -> None:
        """Raises ResumeTokenError unless ``token`` is valid for ``session_id`` now."""
        try:
            payload, sig = token.split(".", 1)
            if not hmac.compare_digest(self._sign(payload), sig):
                raise ValueError("bad signature")
            claims = json.loads(_unb64(payload))
            sid, kid, exp = str(claims["s"]), claims["k"], float(claims["exp"])
        except (ValueError, KeyError, TypeError):
            raise ResumeTokenError(
                "invalid_resume_token", "the resume token is not valid (bad format or signature)"
            ) from None
        if sid != session_id:
            raise ResumeTokenError(
                "invalid_resume_token",
                f"the resume token belongs to another session, not {session_id!r}",
            )
        if kid != key_id:
            raise ResumeTokenError(
                "resume_forbidden", "the session was started with another API key"
            )
        if (time.time() if now is None else now) >= exp:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))
            raise ResumeTokenError("resume_token_expired", f"the resume token expired at {when}")

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())


async def shared_secret(redis: Redis, key: str) -> bytes:
    """The cluster's resume secret: made once by whichever node starts first."""
    await redis.set(key, secrets.token_hex(32), nx=True)
    value = await redis.get(key)
    if value is None:  # deleted between the two calls: try once more
        await redis.set(key, secrets.token_hex(32), nx=True)
        value = await redis.get(key)
    assert value is not None
    return value.encode() if isinstance(value, str) else bytes(value)
