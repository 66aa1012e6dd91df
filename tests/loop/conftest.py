"""Fixtures shared by the tests/loop files that talk to a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from evfleet.store.client import connect_redis


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client of the session's real Redis (`redis_url`), closed after the test."""
    client = connect_redis(redis_url)
    yield client
    await client.aclose()
