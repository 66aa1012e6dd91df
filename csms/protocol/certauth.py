"""Security profile 3: TLS with a client certificate whose subject CN is the station id.

Public names: `peer_common_name`, `certificate_login`.

The server's TLS context asks every client for a certificate (`CERT_OPTIONAL`) and verifies
one that is sent against `tls_client_ca`; a certificate that does not chain to that CA fails
the TLS handshake itself. A verified certificate whose CN is not the station id of the URL
is refused (401), whatever the station's profile. A station provisioned for profile 3 is
admitted on its certificate alone, with no HTTP Basic password; it is refused when it comes
with a password instead (`csms.protocol.handshake`), so a stolen password cannot downgrade it.
A station of profile 1 or 2 that also presents a certificate still logs in with its password.
Deprovisioning a station (`evfleet stations remove`) or lowering its profile revokes the
certificate login at once; the CA itself should issue short-lived certificates.
"""

from __future__ import annotations

import ssl
from typing import Any

from csms.protocol.handshake import Admitted
from csms.protocol.versions import PIN_FIELD
from evfleet.keys import Keys
from evfleet.store.client import as_str


def peer_common_name(conn: Any) -> str | None:
    """Subject CN of the client certificate the TLS layer verified, None when there is none."""
    transport = getattr(conn, "transport", None)
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    cert: Any = ssl_object.getpeercert()
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


async def certificate_login(redis: Any, keys: Keys, station_id: str, default_site: str) -> Admitted | None:
    """Admission of a profile-3 station whose certificate CN matched; None when the station is
    unknown or not provisioned for profile 3 (then the password login applies)."""
    pipe = redis.pipeline(transaction=False)
    pipe.hget(keys.station_credentials(station_id), "security_profile")
    pipe.hmget(keys.station(station_id), ["site_id", "last_boot", PIN_FIELD])
    profile, (site_id, last_boot, pinned) = await pipe.execute()
    if as_str(profile) != "3":
        return None
    return Admitted(station_id, 3, as_str(site_id) or default_site, bool(as_str(last_boot)), as_str(pinned))
