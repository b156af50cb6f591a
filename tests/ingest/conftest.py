from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.support.servers import RedisServer


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The session's real Redis, emptied for each test (queue and job keys are shared names)."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield redis_server.url
    client.flushall()
    client.close()
