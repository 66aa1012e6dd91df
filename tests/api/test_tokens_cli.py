"""`evfleet tokens create/list/revoke` against a real Redis."""

from __future__ import annotations

import hashlib
from pathlib import Path

import redis
from typer.testing import CliRunner

from evfleet.app.cli import app


def test_create_list_revoke(redis_url: str) -> None:
    runner = CliRunner()
    created = runner.invoke(app, ["tokens", "create", "grafana", "--role", "viewer",
                                  "--redis-url", redis_url])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[0]
    assert token.startswith("evf_")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert client.hgetall(f"evfleet:api-token:{digest}")["role"] == "viewer"
    listed = runner.invoke(app, ["tokens", "list", "--redis-url", redis_url])
    assert listed.exit_code == 0 and "grafana" in listed.stdout and digest[:12] in listed.stdout
    assert token not in listed.stdout
    dup = runner.invoke(app, ["tokens", "create", "grafana", "--redis-url", redis_url])
    assert dup.exit_code == 2 and "exists" in dup.output and "Traceback" not in dup.output
    revoked = runner.invoke(app, ["tokens", "revoke", digest[:12], "--redis-url", redis_url])
    assert revoked.exit_code == 0 and "grafana" in revoked.stdout
    assert not client.exists(f"evfleet:api-token:{digest}") and not client.smembers("evfleet:api-tokens")
    client.close()


def test_clear_errors_without_traceback(redis_url: str) -> None:
    runner = CliRunner()
    bad_role = runner.invoke(app, ["tokens", "create", "x", "--role", "admin", "--redis-url", redis_url])
    assert bad_role.exit_code == 2 and "unknown role" in bad_role.output
    missing = runner.invoke(app, ["tokens", "revoke", "nobody", "--redis-url", redis_url])
    assert missing.exit_code == 2 and "no token named" in missing.output
    down = runner.invoke(app, ["tokens", "list", "--redis-url", "redis://127.0.0.1:1/0"])
    assert down.exit_code == 2 and "cannot reach Redis" in down.output
    for result in (bad_role, missing, down):
        assert "Traceback" not in result.output


def test_without_a_url_tokens_live_in_the_embedded_redis_the_csms_uses(tmp_path: Path) -> None:
    """No --redis-url: the same embedded Redis (data dir) as `evfleet stations` and `evfleet csms`."""
    runner = CliRunner()
    env = {"EVFLEET_DATA_DIR": str(tmp_path)}
    created = runner.invoke(app, ["tokens", "create", "ops", "--role", "operator"], env=env)
    assert created.exit_code == 0, created.output
    added = runner.invoke(app, ["stations", "add", "CP-1", "--password", "a-long-secret",
                                "--iterations", "1000"], env=env)
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["tokens", "list"], env=env)
    assert listed.exit_code == 0 and "ops" in listed.output and "operator" in listed.output
    stations = runner.invoke(app, ["stations", "list"], env=env)
    assert "CP-1" in stations.output
    assert (tmp_path / "redis").is_dir()
