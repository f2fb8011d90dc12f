"""API keys, short-lived browser tokens and the WebSocket Origin check.

Keys are never kept in the clear: configuration may give a key or its
``sha256:<hex>`` digest, and only digests are held (in memory, and in Redis when
Redis is on). Comparison is of digests, in constant time. A browser cannot set an
Authorization header on a WebSocket, so it trades its key (from its own backend)
for a token: ``POST /v1/tokens`` returns an HMAC-signed token, bound to the key
and expiring within minutes, to pass as ``?token=`` — never the key itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from redis.exceptions import RedisError

if TYPE_CHECKING:
    from redis.asyncio import Redis


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id(key_digest: str) -> str:
    """A short, non-secret name for a key (logs and limit counters use it)."""
    return key_digest[:16]


def parse_keys(spec: str) -> set[str]:
    """Digests from a comma-separated list of keys or ``sha256:<hex>`` digests."""
    out = set()
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item.startswith("sha256:"):
            hexpart = item[7:].lower()
            if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
                raise ValueError("an api_keys entry starting sha256: must have 64 hex digits")
            out.add(hexpart)
        else:
            out.add(digest(item))
    return out


class AuthError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class KeyRing:
    """Valid key digests: from configuration, plus a Redis set when Redis is on."""

    def __init__(
        self,
        digests: Iterable[str],
        redis: Redis | None = None,
        redis_key: str = "voxwire:api_keys",
    ) -> None:
        self._digests = frozenset(digests)
        self._redis = redis
        self._redis_key = redis_key
        self._redis_has_keys = False
        self._checked_until = 0.0

    async def enabled(self) -> bool:
        """Keys are required once any exist (configured, or in Redis when Redis is on)."""
        if self._digests:
            return True
        if self._redis is None:
            return False
        now = time.monotonic()
        if now >= self._checked_until:
            # Cached briefly: this runs on every request. The flag stays when the last
            # key is revoked, so revoking keys never opens the server.
            try:
                self._redis_has_keys = bool(await self._redis.exists(self._redis_key + ":required"))
            except (RedisError, OSError):
                # Redis is away: what was last seen holds (an open server stays open and
                # a locked one locked); with nothing seen yet, the caller answers 503.
                if self._checked_until == 0.0:
                    raise
                return self._redis_has_keys
            self._checked_until = now + 2.0
        return self._redis_has_keys

    async def has(self, key_digest: str) -> bool:
        # compare_digest against each configured digest: no early exit on a prefix match
        found = False
        for d in self._digests:
            found |= hmac.compare_digest(d, key_digest)
        if not found and self._redis is not None:
            found = bool(await self._redis.sismember(self._redis_key, key_digest))
        return found

    async def by_id(self, kid: str) -> str | None:
        """The digest whose id is ``kid`` (for tokens), if the key is still valid."""
        for d in self._digests:
            if hmac.compare_digest(key_id(d), kid):
                return d
        if self._redis is not None:
            members = await self._redis.smembers(self._redis_key)
            for m in members:
                d = m.decode() if isinstance(m, bytes) else str(m)
                if key_id(d) == kid:
                    return d
        return None


class Tokens:
    """HMAC-signed tokens: ``base64url(json{k, exp}) . base64url(hmac-sha256)``."""

    def __init__(self, secret: str, max_ttl_s: float) -> None:
        # Without a configured secret each process makes its own: tokens then only
        # work on the node that minted them (set token_secret for several nodes).
        self._secret = (secret or secrets.token_hex(32)).encode()
        self.max_ttl_s = max_ttl_s

    def mint(self, kid: str, ttl_s: float, now: float | None = None) -> tuple[str, float]:
        exp = (time.time() if now is None else now) + min(ttl_s, self.max_ttl_s)
        payload = _b64(json.dumps({"k": kid, "exp": round(exp, 3)}, separators=(",", ":")).encode())
        sig = _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())
        return f"{payload}.{sig}", exp

    def verify(self, token: str, now: float | None = None) -> str:
        """The key id the token is bound to; raises AuthError when it is bad or expired."""
        try:
            payload, sig = token.split(".", 1)
            want = _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())
            if not hmac.compare_digest(want, sig):
                raise ValueError("bad signature")
            claims = json.loads(_unb64(payload))
            kid, exp = str(claims["k"]), float(claims["exp"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AuthError(401, "invalid_token", "the token is not valid") from exc
        if (time.time() if now is None else now) >= exp:
            raise AuthError(
                401,
                "token_expired",
                f"the token expired at {time.strftime('%H:%M:%SZ', time.gmtime(exp))}"
                "; mint a new one with POST /v1/tokens",
            )
        return kid


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def origin_allowed(origin: str | None, host: str | None, allowed: frozenset[str]) -> bool:
    """Browsers send Origin on WebSockets; a page from another site must be on the list.

    No Origin (a non-browser client) and same-origin pages are allowed.
    """
    if origin is None:
        return True
    if "*" in allowed or origin in allowed:
        return True
    parts = urlsplit(origin)
    return host is not None and parts.netloc.lower() == host.lower()


def credentials(headers: dict[str, str], query_string: bytes) -> tuple[str | None, str | None]:
    """(api key, token) from the request; a key in the URL is refused outright."""
    query = parse_qs(query_string.decode("latin-1"))
    for name in ("api_key", "key", "apikey", "xi_api_key"):
        if name in query:
            raise AuthError(
                400,
                "key_in_url",
                "API keys must not be sent in URLs (they end up in logs and browser "
                "history); use the Authorization: Bearer header, or a token from "
                "POST /v1/tokens as ?token=",
            )
    auth = headers.get("authorization", "")
    key = None
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthError(
                401, "invalid_authorization", "the Authorization header must be 'Bearer <api key>'"
            )
        key = value.strip()
    token = query.get("token", [None])[-1]
    return key, token


def key_of(scope: Mapping[str, Any]) -> str | None:
    """The id of the key a request was authenticated with (set by the access middleware)."""
    kid = (scope.get("state") or {}).get("key_id")
    return str(kid) if kid is not None else None
