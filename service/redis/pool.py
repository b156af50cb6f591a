"""The Redis connections of one process: one object per REDIS_URL, made by the wiring and closed by it.

Two pools, not one: in redis-py socket timeouts and decode_responses are settings of a pool's connections (a client
on a pool cannot change them), and the ingestion queue needs both different (decoded replies; reads that block 1 s
on the server), while the cache, leases and rate limits share the fail-fast pool (a slow Redis costs milliseconds).
"""

from __future__ import annotations

import redis.asyncio as redis

# The three clients the fail-fast pool replaces had redis-py's default of 100 connections each.
SHARED_MAX_CONNECTIONS = 300
STREAMS_MAX_CONNECTIONS = 100
# XREADGROUP blocks up to 1 s on the server: a streams socket waits this much longer than the queue's timeout.
STREAMS_READ_MARGIN_S = 2.0


class RedisPools:
    def __init__(self, url: str, *, timeout_s: float, streams_timeout_s: float) -> None:
        self._shared = redis.ConnectionPool.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,  # a connection idle that long is pinged first: a restarted Redis is noticed
            max_connections=SHARED_MAX_CONNECTIONS,
        )
        self._streams = redis.ConnectionPool.from_url(
            url,
            decode_responses=True,
            socket_timeout=streams_timeout_s + STREAMS_READ_MARGIN_S,
            socket_connect_timeout=streams_timeout_s,
            max_connections=STREAMS_MAX_CONNECTIONS,
        )
        # Clients on a pool they were given never close it (redis-py): closing the pools is this object's job.
        self._client = redis.Redis(connection_pool=self._shared)
        self._streams_client = redis.Redis(connection_pool=self._streams)

    def client(self) -> redis.Redis:
        """Fail-fast, raw bytes: the thought cache, leases and rate limits."""
        return self._client

    def streams(self) -> redis.Redis:
        """Decoded replies and a socket timeout longer than a blocking read: the ingestion queue."""
        return self._streams_client

    async def aclose(self) -> None:
        try:
            await self._shared.aclose()
        finally:
            await self._streams.aclose()
