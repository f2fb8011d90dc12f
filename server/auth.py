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
import ipaddress
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, urlsplit

import structlog
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

log = structlog.get_logger("voxwire.auth")

# How long a Redis answer about keys is reused (the check runs on every request).
_CACHE_S = 2.0


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
    """Valid key digests: from configuration, plus a Redis set when Redis is on.

    Fail closed: a node that has seen keys in Redis (or runs with ``required``, the
    ``require_api_keys`` setting) never turns open because Redis came back empty
    (restarted without persistence, flushed, replaced): that is "access rules lost",
    and every request gets 503 ``access_rules_lost`` until keys are back.
    """

    def __init__(
        self,
        digests: Iterable[str],
        redis: Redis | RedisCluster | None = None,
        redis_key: str = "voxwire:api_keys",
        required: bool = False,
    ) -> None:
        self._digests = frozenset(digests)
        self._redis = redis
        self._redis_key = redis_key
        self._redis_has_keys = False
        self._checked_until = 0.0
        self.required = required
        # this node has seen keys in Redis: from then on, none there means rules lost
        self._seen_redis_keys = False
        # why access rules are lost (None: they are not)
        self.lost: str | None = None
        # key id -> digest of the keys this node has authenticated (for still_valid)
        self._known: dict[str, str] = {}
        self._valid_cache: dict[str, tuple[bool | None, float]] = {}

    async def enabled(self) -> bool:
        """Keys are required once any exist (configured, or in Redis when Redis is on).

        Raises AuthError 503 ``access_rules_lost`` when keys were expected and Redis has
        none, and RedisError/OSError when Redis has never answered yet.
        """
        if self._digests:
            return True
        if self._redis is None:
            if self.required:  # the CLI refuses to start like this; kept for embedders
                self._lose("require_api_keys is set but no API key is configured (api_keys)")
                raise self._lost_error()
            return False
        now = time.monotonic()
        if now >= self._checked_until:
            # Cached briefly: this runs on every request. The flag stays when the last
            # key is revoked, so revoking keys never opens the server.
            try:
                found = await self._redis.exists(self._redis_key + ":required", self._redis_key)
            except (RedisError, OSError):
                # Redis is away: what was last seen holds (an open server stays open and
                # a locked one locked); with nothing seen yet, the caller answers 503.
                if self._checked_until == 0.0:
                    raise
                if self.lost is not None:
                    raise self._lost_error() from None
                return self._redis_has_keys
            self._checked_until = now + _CACHE_S
            self._redis_has_keys = bool(found)
            if self._redis_has_keys:
                self._seen_redis_keys = True
                if self.lost is not None:
                    log.warning("access_rules_restored", redis_key=self._redis_key)
                    self.lost = None
            elif self._seen_redis_keys or self.required:
                self._lose(
                    "API keys are expected in Redis ("
                    + (
                        "this node has seen them there"
                        if self._seen_redis_keys
                        else "require_api_keys is set"
                    )
                    + f") but {self._redis_key} is empty: its data was lost (a restart "
                    "without persistence?). Refusing to serve without keys until one is "
                    "added again (voxwire keys new --redis-url ...)"
                )
        if self.lost is not None:
            raise self._lost_error()
        return self._redis_has_keys

    def _lose(self, reason: str) -> None:
        if self.lost is None:  # logged once, when it happens
            log.error("access_rules_lost", reason=reason)
        self.lost = reason

    def _lost_error(self) -> AuthError:
        return AuthError(503, "access_rules_lost", f"access rules lost: {self.lost}")

    async def has(self, key_digest: str) -> bool:
        # compare_digest against each configured digest: no early exit on a prefix match
        found = False
        for d in self._digests:
            found |= hmac.compare_digest(d, key_digest)
        if not found and self._redis is not None:
            found = bool(await self._redis.sismember(self._redis_key, key_digest))
            self._seen_redis_keys |= found
        if found:
            self._known[key_id(key_digest)] = key_digest
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
                    self._known[kid] = d
                    self._seen_redis_keys = True
                    return d
        return None

    async def still_valid(self, kid: str) -> bool | None:
        """Whether the key with id ``kid`` is still valid: True (configured, or still in
        Redis), False (revoked: no longer in Redis), None (cannot tell: Redis does not
        answer, or it came back empty, see ``lost``). At most one Redis round trip per
        key every couple of seconds, however many sessions ask."""
        for d in self._digests:
            if hmac.compare_digest(key_id(d), kid):
                return True
        if self._redis is None:
            return False
        now = time.monotonic()
        cached = self._valid_cache.get(kid)
        if cached is not None and cached[1] > now:
            return cached[0]
        answer: bool | None
        try:
            known = self._known.get(kid)
            async with self._redis.pipeline(transaction=False) as pipe:
                if known is None:
                    pipe.smembers(self._redis_key)
                else:
                    pipe.sismember(self._redis_key, known)
                # one key per EXISTS: on a Redis Cluster the two keys are in different
                # slots, and a pipelined EXISTS of both comes back as two answers
                pipe.exists(self._redis_key + ":required")
                pipe.exists(self._redis_key)
                member, required, listed = await pipe.execute()
            anything = required or listed
            if known is None:
                member = any(
                    key_id(m.decode() if isinstance(m, bytes) else str(m)) == kid for m in member
                )
            if member:
                answer = True
                self._seen_redis_keys = True
            elif not anything and (self._seen_redis_keys or self.required):
                answer = None  # Redis lost its data: revoked or not is unknown
            else:
                answer = False
        except (RedisError, OSError):
            answer = None
        if len(self._valid_cache) > 10000:
            self._valid_cache.clear()
        self._valid_cache[kid] = (answer, now + _CACHE_S)
        return answer


class HasKeys(Protocol):
    """What ``key_still_valid`` needs of the application state (no web layer here)."""

    keys: KeyRing


async def key_still_valid(state: HasKeys, key_id: str) -> bool | None:
    """For a session's watchdog: is the API key (by id) a live session was admitted with
    still valid? True: yes; False: revoked (``voxwire keys revoke``), end the session;
    None: cannot tell now (Redis down or emptied), keep going and ask again later.
    Cheap: a cached answer, refreshed with one Redis round trip every couple of seconds."""
    return await state.keys.still_valid(key_id)


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


def host_is_known(host: str | None, names: frozenset[str]) -> bool:
    """Whether a Host header names this server in a way DNS rebinding cannot fake: an IP
    address, a loopback name (``localhost``, which browsers resolve themselves), or
    one of ``names`` (the ``allowed_hosts`` setting and the configured ``host``)."""
    if not host:
        return False
    try:
        name = (urlsplit("//" + host).hostname or "").rstrip(".")
    except ValueError:  # a malformed port or bracket
        return False
    if not name:
        return False
    if name == "localhost" or name.endswith(".localhost") or "*" in names or name in names:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def origin_allowed(
    origin: str | None,
    host: str | None,
    allowed: frozenset[str],
    known_hosts: frozenset[str] = frozenset(),
) -> bool:
    """Browsers send Origin on WebSockets; a page from another site must be on the list.

    No Origin (a non-browser client) is allowed, and so is a page of the server's own
    origin (Origin's host and port equal to the Host header) when that Host is one the
    server is known by (``host_is_known``): a page on evil.example that DNS-rebinds its
    name to this server sends Origin and Host both ``evil.example``, and is refused.
    """
    if origin is None:
        return True
    if "*" in allowed or origin.rstrip("/") in allowed:
        return True
    parts = urlsplit(origin)
    if host is None or parts.netloc.lower() != host.lower():
        return False
    return host_is_known(host, known_hosts)


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
        # Bearer, or Deepgram's "Token <key>"
        if scheme.lower() not in ("bearer", "token") or not value.strip():
            raise AuthError(
                401,
                "invalid_authorization",
                "the Authorization header must be 'Bearer <api key>' (or 'Token <api key>')",
            )
        key = value.strip()
    else:
        # the vendors' own headers: ElevenLabs' xi-api-key, Cartesia's X-API-Key
        key = headers.get("xi-api-key") or headers.get("x-api-key") or None
    token = query.get("token", [None])[-1]
    return key, token


def key_of(scope: Mapping[str, Any]) -> str | None:
    """The id of the key a request was authenticated with (set by the access middleware)."""
    kid = (scope.get("state") or {}).get("key_id")
    return str(kid) if kid is not None else None
