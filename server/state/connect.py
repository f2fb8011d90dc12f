"""The async Redis client of the shared state, from ``redis_url`` (docs/redis.md).

Three spellings, one per deployment:

- ``redis://[[user]:password@]host:port[/db]`` (also ``rediss://``, ``unix://``): one
  Redis, through redis-py's own URL parser.
- ``redis+sentinel://[[user]:password@]host:port[,host:port…]/service[/db]``: the
  primary that the Sentinels at those addresses name for ``service``; after a failover
  the client reconnects to the new one. The credentials are the data nodes'; Sentinels
  that require a password take ``?sentinel_password=…``.
- ``redis+cluster://[[user]:password@]host:port[,host:port…]``: a Redis Cluster, found
  from any of those seed nodes (database 0 only: a cluster has no other).

Every call that fails to connect or times out is retried ``retries`` times, with the same
backoff whatever the spelling. The default (3: under a second in all) rides over a
dropped connection, not over a failover (seconds to tens of seconds), so a failover is
the state-outage policy's to handle (server/journal.py: a session goes on, without
resume). Retries that outlast the failover make the journal wait it out instead, when
``state_write_timeout_s`` allows as long (docs/redis.md).
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qs, unquote

import msgspec
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ClusterDownError, RedisClusterException, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

StateRedis: TypeAlias = Redis | RedisCluster

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
_DEFAULT_PORTS = {SENTINEL_SCHEME: 26379, CLUSTER_SCHEME: 6379}


class RedisTarget(msgspec.Struct, frozen=True, kw_only=True):
    """What a ``redis+sentinel://`` or ``redis+cluster://`` URL names."""

    kind: Literal["sentinel", "cluster"]
    nodes: list[tuple[str, int]]  # Sentinels, or the cluster's seed nodes
    service: str = ""  # Sentinel: the monitored primary's name
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None


def _host_port(spec: str, default_port: int) -> tuple[str, int]:
    if spec.startswith("["):  # [::1]:26379
        host, _, rest = spec[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = spec.rpartition(":") if ":" in spec else (spec, "", "")
    if not host:
        raise ValueError(f"no host in {spec!r}")
    try:
        return host, int(port) if port else default_port
    except ValueError:
        raise ValueError(f"bad port in {spec!r}") from None


def _db(text: str) -> int:
    try:
        return int(text) if text else 0
    except ValueError:
        raise ValueError(f"the database must be a number, not {text!r}") from None


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    """(username, password) from a URL's ``user:password`` part (percent-decoded)."""
    user, colon, pw = userinfo.partition(":")
    return unquote(user) or None, unquote(pw) if colon else None


def _params(query: str) -> dict[str, str]:
    params = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = set(params) - {"sentinel_password"}
    if unknown:
        raise ValueError(f"unknown parameter(s) in the Redis URL: {', '.join(sorted(unknown))}")
    return params


def parse_url(url: str) -> RedisTarget | None:
    """The Sentinel or Cluster target ``url`` names; None for a plain Redis URL.
    Raises ValueError, naming the problem, for a malformed one."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _DEFAULT_PORTS:
        return None
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    username, password = _credentials(userinfo)
    nodes = [_host_port(h.strip(), _DEFAULT_PORTS[scheme]) for h in hosts.split(",") if h.strip()]
    if not nodes:
        raise ValueError(f"{scheme}:// names no host")
    params = _params(query)
    parts = [p for p in path.split("/") if p]
    if scheme == CLUSTER_SCHEME:
        if parts and _db(parts[0]) != 0:
            raise ValueError("a Redis Cluster has database 0 only")
        if "sentinel_password" in params:
            raise ValueError("sentinel_password is for redis+sentinel:// URLs")
        return RedisTarget(kind="cluster", nodes=nodes, username=username, password=password)
    if not parts or len(parts) > 2:
        raise ValueError("a redis+sentinel:// URL ends in /<service name>[/<db>]")
    return RedisTarget(
        kind="sentinel",
        nodes=nodes,
        service=unquote(parts[0]),
        db=_db(parts[1]) if len(parts) == 2 else 0,
        username=username,
        password=password,
        sentinel_password=params.get("sentinel_password"),
    )


class ClusterUnavailable(RedisConnectionError):
    """The cluster could not serve a call: no node reachable, or slots without a primary
    (mid-failover). redis-py says so with RedisClusterException, which is no RedisError;
    every caller here treats RedisError as a state-store outage (server/journal.py,
    the store check, the HTTP answers), so it is re-raised as one."""


class _StatePipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc
        except (RedisConnectionError, RedisTimeoutError, ClusterDownError):
            # A pipeline that fails does not make redis-py read the slot map again
            # (commands do): a node that died would stay in it until some command failed.
            with contextlib.suppress(RedisError, RedisClusterException):
                await self.cluster_client.nodes_manager.initialize()
            raise


class StateCluster(RedisCluster):
    """A Redis Cluster client that fails with RedisError only (``ClusterUnavailable``),
    retries with a backoff (``state_retry``: redis-py's cluster client retries at once,
    so its retries are spent in milliseconds), and whose ``ping`` asks every primary
    (redis-py asks one node): the state store is up only when every slot is served,
    since any session's keys may be in any."""

    state_retry = Retry(NoBackoff(), 0)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async def once() -> Any:
            try:
                return await super(StateCluster, self).execute_command(*args, **kwargs)
            except RedisClusterException as exc:
                raise ClusterUnavailable(str(exc)) from exc

        async def failed(_: Exception) -> None:
            return None

        return await self.state_retry.call_with_retry(once, failed)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            raise ValueError("a cluster pipeline takes no shard hint")
        return _StatePipeline(self, transaction)  # type: ignore[abstract]  # (as redis-py does)

    async def ping(self, **kwargs: Any) -> Any:
        kwargs.setdefault("target_nodes", RedisCluster.PRIMARIES)
        return await super().ping(**kwargs)


class SentinelRedis(Redis):
    """The client of a Sentinel-managed primary; closing it closes the connections to
    the Sentinels too (redis-py leaves those open)."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            for s in self.sentinel_manager.sentinels:
                await s.aclose()


def redis_client(url: str, timeout_s: float = 2.0, retries: int = 3) -> StateRedis:
    """The client for ``url`` (any of the three spellings); connects on first use.

    ``timeout_s`` bounds each connect and each reply; a failed connect or a timeout is
    retried ``retries`` times, 50 ms apart doubling up to 500 ms (with jitter).
    """
    target = parse_url(url)
    backoff = ExponentialWithJitterBackoff(base=0.05, cap=0.5)
    retry = Retry(backoff, retries)
    if target is None:
        return Redis.from_url(
            url, retry=retry, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
    if target.kind == "cluster":
        cluster = StateCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in target.nodes],
            username=target.username,
            password=target.password,
            retry=Retry(NoBackoff(), 0),  # (it redirects by itself; state_retry retries)
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
        # a cluster mid-failover answers CLUSTERDOWN until a replica is promoted
        cluster.state_retry = Retry(
            backoff, retries, (RedisConnectionError, RedisTimeoutError, ClusterDownError)
        )
        return cluster
    # One try per Sentinel: an unreachable one is skipped for the next at once, rather
    # than retried while the primary's address could come from another.
    sentinel_kwargs: dict[str, object] = {
        "retry": Retry(NoBackoff(), 0),
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
    }
    if target.sentinel_password is not None:
        sentinel_kwargs["password"] = target.sentinel_password
    sentinel = Sentinel(target.nodes, sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    client: SentinelRedis = sentinel.master_for(
        target.service,
        redis_class=SentinelRedis,
        db=target.db,
        username=target.username,
        password=target.password,
        retry=retry,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )
    client.sentinel_manager = sentinel
    return client
