"""Resume tokens: ``base64url(json{s, k, e, exp}) . base64url(hmac-sha256)``.

A token is bound to one session id, its API key and the session's epoch (how many
times it was taken over when the token was minted), and expires. The epoch makes a
token single-use: a takeover moves the epoch on, so the same token cannot take the
session again, and of two resumes racing with one token only one wins (the store
checks the epoch in the same atomic step as the takeover). Each ``ready`` brings a
fresh token. A token it is what lets a client take its
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
    from server.state.connect import StateRedis


class ResumeTokenError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ResumeTokens:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def mint(
        self,
        session_id: str,
        ttl_s: float,
        key_id: str | None = None,
        now: float | None = None,
        epoch: int = 0,
    ) -> str:
        """A token for ``session_id`` in ``epoch``, usable only with the same API key."""
        exp = (time.time() if now is None else now) + ttl_s
        claims = json.dumps(
            {"s": session_id, "k": key_id, "e": epoch, "exp": round(exp, 3)},
            separators=(",", ":"),
        )
        payload = _b64(claims.encode())
        return f"{payload}.{self._sign(payload)}"

    def verify(
        self, token: str, session_id: str, key_id: str | None = None, now: float | None = None
    ) -> int:
        """The epoch ``token`` was minted in; raises ResumeTokenError unless it is valid
        for ``session_id`` now (whether it was used already, the store decides)."""
        try:
            payload, sig = token.split(".", 1)
            if not hmac.compare_digest(self._sign(payload), sig):
                raise ValueError("bad signature")
            claims = json.loads(_unb64(payload))
            sid, kid, exp = str(claims["s"]), claims["k"], float(claims["exp"])
            epoch = int(claims["e"])
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
        return epoch

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())


async def shared_secret(redis: StateRedis, key: str) -> bytes:
    """The cluster's resume secret: made once by whichever node starts first."""
    await redis.set(key, secrets.token_hex(32), nx=True)
    value = await redis.get(key)
    if value is None:  # deleted between the two calls: try once more
        await redis.set(key, secrets.token_hex(32), nx=True)
        value = await redis.get(key)
    assert value is not None
    return value.encode() if isinstance(value, str) else bytes(value)
