"""Redis for one-shot management commands (`evfleet stations|sites|idtokens|tokens ...`).

With a Redis URL configured, that server. Without one, the embedded Redis of `evfleet csms`
in the data dir: the running node's server when its URL file answers, else the same
persistent data dir started just for this command and stopped after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from csms.settings import CsmsSettings, default_data_dir
from csms.store.embedded import EmbeddedRedis
from evfleet.store.client import connect_redis


async def _running_embedded_url(home: Path) -> str | None:
    """URL of the embedded Redis a running csms node left in `home`, if it answers."""
    from csms.app import EMBEDDED_URL_FILE  # the node writes it; imported late (csms.app is heavy)

    url_file = home / EMBEDDED_URL_FILE
    if not url_file.exists():
        return None
    url = url_file.read_text().strip()
    probe = connect_redis(url)
    try:
        await probe.ping()
        return url
    except RedisError:
        return None
    finally:
        await probe.aclose()


@asynccontextmanager
async def admin_redis(settings: CsmsSettings) -> AsyncIterator[Any]:
    """A Redis client for a management command (see the module docstring)."""
    embedded: EmbeddedRedis | None = None
    url = settings.redis_url
    if url is None:
        home = Path(settings.data_dir or default_data_dir())
        url = await _running_embedded_url(home)
        if url is None:
            (home / "redis").mkdir(parents=True, exist_ok=True)
            embedded = await asyncio.to_thread(
                EmbeddedRedis(data_dir=str(home / "redis"), persist=True).start)
            url = embedded.url
    client = connect_redis(url)
    try:
        yield client
    finally:
        await client.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
