"""``redis_url``'s three spellings (server/state/connect.py), the clients they make, and
the API keys the CLI stores through them (one Redis and a real Redis Cluster)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from redis.exceptions import RedisError

from server.auth import KeyRing, digest, key_id
from server.state.connect import (
    ClusterUnavailable,
    RedisTarget,
    SentinelRedis,
    StateCluster,
    parse_url,
    redis_client,
)
from tests.state.conftest import Connect
from tests.support import ROOT, keys_cli


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("redis://h:6379/0", None),
        ("rediss://u:p@h:6380/2", None),
        ("unix:///run/redis.sock", None),
        (
            "redis+cluster://10.0.0.1:7000,10.0.0.2:7001,h3",
            RedisTarget(
                kind="cluster", nodes=[("10.0.0.1", 7000), ("10.0.0.2", 7001), ("h3", 6379)]
            ),
        ),
        (
            "redis+cluster://:s%40cret@[::1]:7000/0",
            RedisTarget(kind="cluster", nodes=[("::1", 7000)], password="s@cret"),
        ),
        (
            "redis+sentinel://s1:26380,s2/voxwire",
            RedisTarget(kind="sentinel", nodes=[("s1", 26380), ("s2", 26379)], service="voxwire"),
        ),
        (
            "redis+sentinel://app:pw@s1,s2,s3/main/3?sentinel_password=sp",
            RedisTarget(
                kind="sentinel",
                nodes=[("s1", 26379), ("s2", 26379), ("s3", 26379)],
                service="main",
                db=3,
                username="app",
                password="pw",
                sentinel_password="sp",
            ),
        ),
    ],
)
def test_url_spellings(url: str, target: RedisTarget | None) -> None:
    assert parse_url(url) == target


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://s1:26379", "ends in /<service name>"),
        ("redis+sentinel://s1/svc/db", "must be a number"),
        ("redis+sentinel:///svc", "names no host"),
        ("redis+sentinel://s1:port/svc", "bad port"),
        ("redis+cluster://h1:7000/1", "database 0 only"),
        ("redis+cluster://h1?sentinel_password=x", "for redis+sentinel"),
        ("redis+cluster://h1?timeout=3", "unknown parameter(s) in the Redis URL: timeout"),
    ],
)
def test_malformed_urls_say_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_url(url)


async def test_each_spelling_makes_its_client() -> None:
    cluster = redis_client("redis+cluster://127.0.0.1:7000")
    sentinel = redis_client("redis+sentinel://127.0.0.1:26379/svc?sentinel_password=sp")
    try:
        assert isinstance(cluster, StateCluster)
        assert isinstance(sentinel, SentinelRedis) and sentinel.sentinel_manager is not None
        # the Sentinels get their own password; the data nodes get the URL's (none here)
        (s,) = sentinel.sentinel_manager.sentinels
        assert s.connection_pool.connection_kwargs["password"] == "sp"
        assert sentinel.connection_pool.connection_kwargs.get("password") is None
    finally:
        await cluster.aclose()
        await sentinel.aclose()


async def test_an_unreachable_store_fails_with_a_redis_error() -> None:
    """What the state-outage policy catches (RedisError), whatever the topology: redis-py's
    own cluster error is not one."""
    closed = "127.0.0.1:1"
    for url in (f"redis://{closed}/0", f"redis+cluster://{closed}", f"redis+sentinel://{closed}/s"):
        client = redis_client(url, timeout_s=1.0, retries=0)
        try:
            with pytest.raises(RedisError) as err:
                await client.ping()
            if url.startswith("redis+cluster"):
                assert isinstance(err.value, ClusterUnavailable)
                assert "cannot be connected" in str(err.value)
        finally:
            await client.aclose()


def test_serve_refuses_an_unreachable_cluster_clearly() -> None:
    env = {**os.environ, "VOXWIRE_REDIS_URL": "redis+cluster://127.0.0.1:1", "VOXWIRE_PORT": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "server", "serve"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "voxwire: cannot reach Redis at redis+cluster://127.0.0.1:1" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_keys_made_by_the_cli_are_checked_through_the_store(
    redis_url: str, connect: Connect
) -> None:
    """``voxwire keys new/revoke --redis-url`` and the server's key checks, on one Redis
    and on a cluster (where the key set and its flag are in different slots)."""
    prefix = f"k{os.getpid()}{redis_url.count(',')}:"
    key = keys_cli("new", "--redis-url", redis_url, "--redis-prefix", prefix)
    ring = KeyRing([], connect(redis_url), f"{prefix}api_keys")
    assert await ring.enabled() is True
    assert await ring.has(digest(key)) is True
    kid = key_id(digest(key))
    assert await ring.still_valid(kid) is True
    keys_cli("revoke", key, "--redis-url", redis_url, "--redis-prefix", prefix)
    ring = KeyRing([], connect(redis_url), f"{prefix}api_keys")  # (no cached answers)
    assert await ring.has(digest(key)) is False
    assert await ring.still_valid(kid) is False
    assert await ring.enabled() is True  # revoking the last key never opens the server
