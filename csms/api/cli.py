"""`evfleet tokens ...` (operator API bearer tokens).

Tokens live in Redis as SHA-256 hashes (docs/api.md). The Redis URL comes from
`--redis-url`, else `EVFLEET_REDIS_URL` / the TOML file (`--config`), else the embedded
Redis of `evfleet csms` in the data dir, like `evfleet stations`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import typer

tokens_app = typer.Typer(help="Manage operator API bearer tokens (viewer or operator role).",
                         no_args_is_help=True)

RedisUrlOpt = typer.Option(None, "--redis-url",
                           help="Redis URL (default: EVFLEET_REDIS_URL, --config, else the embedded Redis)")
PrefixOpt = typer.Option(None, "--redis-prefix", help="key prefix (default: evfleet)")
ConfigOpt = typer.Option(None, "--config", help="TOML configuration file", exists=False)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


async def _with_store(redis_url: str | None, prefix: str | None, config: Path | None, op: Any) -> Any:
    from csms.api.tokens import TokenStore
    from csms.settings import ConfigFileError, load_settings
    from evfleet.clock import RealClock
    from evfleet.store.layout import LayoutMismatch, resolve_keys

    try:
        settings = load_settings(config, redis_url=redis_url, redis_prefix=prefix)
    except (ConfigFileError, ValueError) as err:
        _fail(str(err))
        raise AssertionError from err  # unreachable: _fail exits
    from redis.exceptions import RedisError

    from csms.store.admin import admin_redis

    try:
        async with admin_redis(settings) as client:
            keys = await resolve_keys(client, settings.redis_prefix, settings.redis_shards)
            return await op(TokenStore(client, keys, RealClock()))
    except LayoutMismatch as err:
        _fail(str(err))
    except RedisError as err:
        _fail(f"cannot reach Redis at {settings.redis_url or 'the embedded data dir'}: {err}")


@tokens_app.command("create")
def create(name: str = typer.Argument(..., help="who or what uses the token"),
           role: str = typer.Option("viewer", "--role", help="viewer (read) or operator (read + act)"),
           redis_url: str | None = RedisUrlOpt, redis_prefix: str | None = PrefixOpt,
           config: Path | None = ConfigOpt) -> None:
    """Create a token and print it once (only its SHA-256 hash is stored)."""
    from csms.api.tokens import TokenError

    async def op(store: Any) -> Any:
        try:
            return await store.create(name, role)
        except TokenError as err:
            _fail(str(err))

    token, info = asyncio.run(_with_store(redis_url, redis_prefix, config, op))
    typer.echo(token)
    typer.echo(f"created {info.role.value} token {info.name!r} (id {info.token_hash[:12]}); "
               "store it now, it cannot be shown again", err=True)


@tokens_app.command("list")
def list_tokens(redis_url: str | None = RedisUrlOpt, redis_prefix: str | None = PrefixOpt,
                config: Path | None = ConfigOpt) -> None:
    """List tokens (name, role, id, created_at); secrets are never shown."""

    async def op(store: Any) -> Any:
        return await store.list()

    infos = asyncio.run(_with_store(redis_url, redis_prefix, config, op))
    if not infos:
        typer.echo("no tokens")
        return
    typer.echo(f"{'NAME':<24} {'ROLE':<9} {'ID':<13} CREATED")
    for info in infos:
        typer.echo(f"{info.name:<24} {info.role.value:<9} {info.token_hash[:12]:<13} {info.created_at}")


@tokens_app.command("revoke")
def revoke(name_or_id: str = typer.Argument(..., help="token name or id (from `list`)"),
           redis_url: str | None = RedisUrlOpt, redis_prefix: str | None = PrefixOpt,
           config: Path | None = ConfigOpt) -> None:
    """Revoke a token by name or id; it stops working immediately."""
    from csms.api.tokens import TokenError

    async def op(store: Any) -> Any:
        try:
            return await store.revoke(name_or_id)
        except TokenError as err:
            _fail(str(err))

    info = asyncio.run(_with_store(redis_url, redis_prefix, config, op))
    typer.echo(f"revoked {info.role.value} token {info.name!r} (id {info.token_hash[:12]})")


def register(app: typer.Typer) -> None:
    """Add the token commands to the root app."""
    app.add_typer(tokens_app, name="tokens")
