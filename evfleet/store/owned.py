"""Lua scripts that touch a key only while it holds the caller's token (leases and locks).

A lease or lock is a key whose value is its holder's token, set with `SET NX PX`. Renewing or
releasing it must not touch a key that expired and was taken by another holder meanwhile, so the
check and the write run in one script: `KEYS[1]` the key, `ARGV[1]` the caller's token.
"""

from __future__ import annotations

PEXPIRE_IF_OWNED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
"""Extend the key's TTL to `ARGV[2]` ms if it holds `ARGV[1]`; 1 if extended, else 0."""

DEL_IF_OWNED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
"""Delete the key if it holds `ARGV[1]`; 1 if deleted, else 0."""
