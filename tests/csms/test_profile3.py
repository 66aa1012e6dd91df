"""Security profile 3: TLS client certificates from a test CA made here with the openssl CLI."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidMessage, InvalidStatus

from csms.app import running_csms
from csms.store.provisioning import remove_station
from evfleet.keys import Keys
from tests.csms.conftest import PASSWORD, make_settings
from tests.csms.helpers import RawStation
from tests.csms.test_connections import Provision, auth

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ca(d: Path, name: str) -> tuple[Path, Path]:
    cert, key = d / f"{name}.pem", d / f"{name}.key"
    _openssl("req", "-x509", *EC, "-keyout", str(key), "-out", str(cert), "-days", "1",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign")
    return cert, key


def _issue(d: Path, ca: tuple[Path, Path], name: str, cn: str, san: str | None = None) -> tuple[Path, Path]:
    cert, key, csr = d / f"{name}.pem", d / f"{name}.key", d / f"{name}.csr"
    _openssl("req", *EC, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}")
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n" if san else "extendedKeyUsage=clientAuth\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-out", str(cert), "-days", "1", "-extfile", str(ext))
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    d = tmp_path_factory.mktemp("pki")
    ca, rogue = _ca(d, "test-ca"), _ca(d, "rogue-ca")
    return {"ca": ca, "server": _issue(d, ca, "server", "127.0.0.1", "IP:127.0.0.1,DNS:localhost"),
            "cp3": _issue(d, ca, "cp3", "CP-3"), "other": _issue(d, ca, "other", "CP-OTHER"),
            "cp2": _issue(d, ca, "cp2", "CP-2"), "rogue": _issue(d, rogue, "rogue", "CP-3")}


def _client(pki: dict[str, tuple[Path, Path]], cert: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki["ca"][0]))
    if cert is not None:
        ctx.load_cert_chain(str(pki[cert][0]), str(pki[cert][1]))
    return ctx


async def _status(url: str, ctx: ssl.SSLContext, headers: dict[str, str] | None = None) -> int:
    with pytest.raises(InvalidStatus) as info:
        await connect(url, ssl=ctx, subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                      additional_headers=headers or {}, open_timeout=5)
    return info.value.response.status_code


async def test_profile_3_station_logs_in_with_its_certificate_only(
        redis_url: str, provision: Provision, redis: Redis, pki: dict[str, tuple[Path, Path]]) -> None:
    server_cert, server_key = pki["server"]
    settings = make_settings(redis_url, tls_cert=server_cert, tls_key=server_key, tls_client_ca=pki["ca"][0])
    async with running_csms(settings, services=[]) as node:
        await provision("CP-3", security_profile=3)
        await provision("CP-2", security_profile=2)
        url = node.station_url("CP-3")

        st = await RawStation.connect(node.url, "CP-3", None, ssl_ctx=_client(pki, "cp3"))  # no password
        await st.ok("BootNotification", {"reason": "PowerUp",
                                         "chargingStation": {"model": "M", "vendorName": "V"}})
        assert await redis.hget("evfleet:station:CP-3", "security_profile") == "3"
        await st.close()

        # the right password without the certificate: refused (no downgrade to profile 2)
        assert await _status(url, _client(pki, None), auth("CP-3", PASSWORD)) == 401
        # a valid certificate of another station: refused, also with that station's password
        assert await _status(url, _client(pki, "other"), auth("CP-3", PASSWORD)) == 401
        # a certificate with the right CN from another CA: the server ends the TLS handshake
        # (TLS 1.3: the client sees the connection close before any HTTP answer)
        with pytest.raises((ssl.SSLError, OSError, InvalidMessage)):
            await connect(url, ssl=_client(pki, "rogue"), subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                          open_timeout=5)
        # profile 2 stations keep using their password on the same listener, certificate or not
        for cert in (None, "cp2"):
            st2 = await RawStation.connect(node.url, "CP-2", PASSWORD, ssl_ctx=_client(pki, cert))
            await st2.ok("Heartbeat", {})
            await st2.close()
        # deprovisioning revokes the certificate login at once
        await remove_station(redis, Keys("evfleet"), "CP-3")
        assert await _status(url, _client(pki, "cp3")) == 401


async def test_profile_3_station_refused_with_password_on_plain_listener(redis_url: str,
                                                                         provision: Provision) -> None:
    async with running_csms(make_settings(redis_url), services=[]) as node:
        await provision("CP-3", security_profile=3)
        with pytest.raises(InvalidStatus) as info:
            await RawStation.connect(node.url, "CP-3", PASSWORD)
        assert info.value.response.status_code == 401
        assert b"client certificate" in info.value.response.body


async def test_simulated_station_on_profile_3(redis_url: str, provision: Provision, redis: Redis,
                                             pki: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    """evse_sim's station logs in with its certificate (`--client-certs` of `evfleet sim`)."""
    import asyncio
    import random
    import shutil
    from datetime import UTC, datetime

    from evfleet.clock import ScaledClock
    from evse_sim.evse import EvseSpec
    from evse_sim.station import ConnectionConfig, SimStation, StationConfig
    from tests.waiting import until

    shutil.copy(pki["cp3"][0], tmp_path / "CP-3.pem")
    shutil.copy(pki["cp3"][1], tmp_path / "CP-3.key")
    server_cert, server_key = pki["server"]
    settings = make_settings(redis_url, tls_cert=server_cert, tls_key=server_key, tls_client_ca=pki["ca"][0])
    async with running_csms(settings, services=[]) as node:
        await provision("CP-3", security_profile=3)
        conn = ConnectionConfig(node.url, tls_ca=str(pki["ca"][0]), client_cert_dir=str(tmp_path),
                                backoff_base_s=0.05, backoff_max_s=0.3, response_timeout_s=5)
        assert conn.security_profile == 3
        clock = ScaledClock(datetime(2026, 3, 2, 17, 0, tzinfo=UTC), speed=1.0)
        station = SimStation(StationConfig("CP-3", (EvseSpec.ac(22.0),)), conn, clock, rng=random.Random(1))
        task = asyncio.create_task(station.run(tick_s=1.0))
        try:
            await until(lambda: station.online and station.accepted, 15, "the simulated station boots")
            assert await redis.hget("evfleet:station:CP-3", "security_profile") == "3"
        finally:
            station.stop()
            await asyncio.wait_for(task, 10)
