"""Polling helper shared by the integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def until(pred: Callable[[], Any], timeout_s: float = 10.0, what: str = "") -> Any:
    """Poll an (async) predicate every 50 ms until truthy; return its value, or fail after `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = pred()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or pred}")
        await asyncio.sleep(0.05)
