"""The state stores run against one Redis and against a three-primary Redis Cluster:
``redis_url`` is parametrized over both, and clients are made by the server's own
``redis_client`` (so the cluster's URL spelling is what the tests use too)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio.cluster import RedisCluster

from server.state.connect import StateRedis, redis_client
from tests.redis_cluster import redis_cluster as redis_cluster  # one per test session

REDIS_KINDS = ["redis", "cluster"]


def url_of(request: pytest.FixtureRequest, kind: str) -> str:
    """The URL of the session's single Redis or of its cluster (started when first asked)."""
    url: str = request.getfixturevalue("redis_server" if kind == "redis" else "redis_cluster").url
    return url


@pytest.fixture(params=REDIS_KINDS)
def redis_url(request: pytest.FixtureRequest) -> str:
    """A single Redis's URL, then a Redis Cluster's."""
    return url_of(request, request.param)


Connect = Callable[[str], StateRedis]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Makes clients (as the server does) and closes them after the test."""
    made: list[StateRedis] = []

    def make(url: str) -> StateRedis:
        made.append(redis_client(url))
        return made[-1]

    yield make
    for c in made:
        await c.aclose()


async def all_keys(client: StateRedis, pattern: str) -> list[bytes | str]:
    """Every key matching ``pattern``, on every primary of a cluster."""
    if isinstance(client, RedisCluster):
        return list(await client.keys(pattern, target_nodes=RedisCluster.PRIMARIES))
    return list(await client.keys(pattern))
