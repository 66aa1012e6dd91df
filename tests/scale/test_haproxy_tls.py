"""Security profile 3 behind the shipped HAProxy (issue 11): deploy/haproxy/haproxy.cfg passes TLS
through (`frontend ocpp_tls`, mode tcp) to a csms node that ends TLS itself, so the node sees the
station's client certificate: CN = station id boots, another CN is refused. Test CA from openssl."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from pathlib import Path

import pytest
from redis.asyncio import Redis
from websockets.exceptions import InvalidStatus

from csms.store.provisioning import provision_station
from evfleet.keys import Keys
from tests.csms.helpers import RawStation
from tests.csms.test_profile3 import _ca, _issue
from tests.scale.topology import HAPROXY, topology

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None and not Path(HAPROXY).exists(),
                                reason="haproxy not installed (scripts/setup.sh --dev installs it)")
KEYS = Keys()


def _client(ca: Path, cert: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


async def _connect(url: str, station_id: str, ctx: ssl.SSLContext, timeout_s: float = 10.0) -> RawStation:
    """Connect through HAProxy, retrying until its health check has put the node in rotation."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            return await RawStation.connect(url, station_id, None, ssl_ctx=ctx)
        except InvalidStatus:
            raise
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_profile_3_station_boots_through_haproxy_tls_passthrough(redis_url: str,
                                                                       tmp_path: Path) -> None:
    ca = _ca(tmp_path, "station-ca")
    server = _issue(tmp_path, ca, "server", "127.0.0.1", "IP:127.0.0.1,DNS:localhost")
    right, wrong = _issue(tmp_path, ca, "cp3", "CP-3"), _issue(tmp_path, ca, "cpx", "CP-OTHER")
    redis = Redis.from_url(redis_url, decode_responses=True)
    for sid in ("CP-3", "CP-OTHER"):
        await provision_station(redis, KEYS, sid, "ha-station-secret-1", security_profile=3, iterations=1000)
    tls_args = ("--tls-cert", str(server[0]), "--tls-key", str(server[1]), "--tls-client-ca", str(ca[0]))
    async with topology(redis_url, tmp_path, nodes=0, tls_nodes=1, tls_args=tls_args) as topo:
        # the station sees the csms's own certificate (HAProxy ends nothing) and logs in with its own
        station = await _connect(topo.tls_url, "CP-3", _client(ca[0], right))
        await station.ok("BootNotification", {"chargingStation": {"model": "m", "vendorName": "v"},
                                              "reason": "PowerUp"})
        assert await redis.hget(KEYS.station("CP-3"), "security_profile") == "3"
        assert await redis.hget(KEYS.station("CP-3"), "node") == "tls-1"
        await station.close()
        # a valid certificate of another station (CN CP-OTHER) for CP-3: refused by the node
        with pytest.raises(InvalidStatus) as info:
            await _connect(topo.tls_url, "CP-3", _client(ca[0], wrong))
        assert info.value.response.status_code == 401
    await redis.aclose()
