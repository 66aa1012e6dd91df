"""Fixtures shared by the Redis Cluster tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.scale.redis_cluster import redis_cluster


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    """A 3-master Redis Cluster of the test module's own, as a `redis+cluster://` URL (a module may
    define its own `cluster_url`, as tests/scale/test_redis_cluster.py does)."""
    with redis_cluster(3) as ports:
        yield f"redis+cluster://127.0.0.1:{ports[0]}"
