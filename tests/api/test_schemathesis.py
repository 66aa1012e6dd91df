"""schemathesis against the operator API of a live node (real Redis, uvicorn over TCP): every
operation of /openapi.json with generated valid and invalid input; no 5xx, answers as documented."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import hypothesis
import pytest
import redis as sync_redis
import schemathesis
from schemathesis import checks

from csms.api.tokens import TokenStore
from csms.app import API_SERVICE, running_csms
from csms.settings import CsmsSettings
from csms.store.embedded import EmbeddedRedis
from csms.store.provisioning import add_id_token, provision_station, set_site_limit
from evfleet.clock import RealClock
from evfleet.keys import Keys
from evfleet.store.client import connect_redis

KEYS = Keys("evfleet")


class LiveApi:
    """A csms node with the API, run on its own event loop in a thread."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.ready = threading.Event()
        self.stop: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.base_url = ""
        self.token = ""
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as err:  # surfaced by the fixture
            self.error = err
            self.ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        redis = connect_redis(self.redis_url)
        await provision_station(redis, KEYS, "CS-1", "pw-schemathesis", site_id="depot", iterations=1000)
        await set_site_limit(redis, KEYS, "depot", 50.0)
        await add_id_token(redis, KEYS, "TOKEN-1")
        self.token, _ = await TokenStore(redis, KEYS, RealClock()).create("schemathesis", "operator")
        settings = CsmsSettings(redis_url=self.redis_url, host="127.0.0.1", port=0, node_id="st-node",
                                api_host="127.0.0.1", api_port=0, smart_charging=False,
                                fetch_device_model_on_boot=False, call_timeout_s=2)
        async with running_csms(settings, services=[API_SERVICE]) as node:
            while not node.ctx.api_port:
                await asyncio.sleep(0.05)
            self.base_url = f"http://127.0.0.1:{node.ctx.api_port}"
            async with httpx.AsyncClient(base_url=self.base_url) as http:
                for _ in range(200):
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get("/healthz")).status_code == 200:
                            break
                    await asyncio.sleep(0.05)
            self.ready.set()
            await self.stop.wait()
        await redis.aclose()

    def close(self) -> None:
        if self.loop is not None and self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)


@pytest.fixture(scope="module")
def live_api(redis_server: EmbeddedRedis) -> Iterator[LiveApi]:
    sync_redis.Redis.from_url(redis_server.url).flushall()
    api = LiveApi(redis_server.url)
    api.thread.start()
    assert api.ready.wait(30) and api.error is None, api.error
    yield api
    api.close()


def _auth(case: Any, headers: dict[str, str]) -> dict[str, str]:
    """The operator token for the case, unless the case left out its Authorization header: a
    negative case may drop it on purpose (the bearer scheme is a required header to schemathesis),
    and then the API must answer 401, not be given the token back."""
    return headers if "Authorization" in (case.headers or {}) else {}


EXAMPLES_PER_OPERATION = 12  # x 2 modes x 33 operations: about 35 s on a quiet machine


def test_api_conforms_to_its_openapi(live_api: LiveApi) -> None:
    """Each operation (except the endless live feed, covered by tests/api/test_metrics_live.py)
    with generated input, positive and negative, and schemathesis' default checks except
    `positive_data_acceptance`: the API has cross-field rules OpenAPI cannot state (as many
    export as import prices, a connector needs its EVSE, a TxProfile needs its transactionId,
    the first period starts at 0, a clear needs one criterion), answered 422 with a message;
    negative data is still checked to be refused, and nothing may answer 5xx."""
    schema = schemathesis.openapi.from_url(f"{live_api.base_url}/openapi.json")
    headers = {"Authorization": f"Bearer {live_api.token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    tested, failures = [], []
    for operation in operations:
        if operation.path == "/api/v1/live":
            continue
        name = f"{operation.method.upper()} {operation.path}"
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            if operation.path == "/metrics" and mode == schemathesis.GenerationMode.NEGATIVE:
                # its one parameter is a list of strings: every "wrong type" schemathesis makes
                # (name[]=true) is a string again in a query; bad names: test_metrics_live.py
                continue

            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis.settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
                                 suppress_health_check=list(hypothesis.HealthCheck), database=None)
            def check(case: Any) -> None:
                case.call_and_validate(base_url=live_api.base_url, headers=_auth(case, headers), timeout=10,
                                       excluded_checks=[checks.positive_data_acceptance])

            try:
                check()
            except hypothesis.errors.Unsatisfiable:  # no input that could be made invalid
                assert mode == schemathesis.GenerationMode.NEGATIVE, name
            except BaseException as err:  # collect all, so one run shows every finding
                if isinstance(err, KeyboardInterrupt | SystemExit):
                    raise
                failures.append(f"{name} ({mode.value}): {err}")
        tested.append(name)
    assert failures == [], "\n\n".join(failures)
    assert len(tested) >= 25, tested
