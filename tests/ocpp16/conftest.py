"""Fixtures of tests/csms (a csms node on a private Redis, provisioning) reused for 1.6J."""

from tests.csms.conftest import keys, node, provision, redis  # noqa: F401
from tests.csms.test_connections import tls_files  # noqa: F401
