"""Bounded outbox of MQTT messages: coalesces state by topic, drops the oldest when full.

Pure data structure (no I/O): the event reader puts, the publisher takes. A newer message
for a topic already waiting replaces it in place (telemetry is state: only the latest
value matters), unless it is an event (`coalesce=False`, e.g. an input error): every event
waits in line. When `max_messages` wait, the oldest is dropped and counted.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Message:
    """One MQTT publication."""

    topic: str
    payload: str
    retain: bool = False
    qos: int = 0
    coalesce: bool = True  # state (a newer value replaces a waiting one); False: an event, all kept


class Outbox:
    """Topic-keyed FIFO with a bound."""

    def __init__(self, max_messages: int = 10_000) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be >= 1")
        self.max_messages = max_messages
        self._items: OrderedDict[str | int, Message] = OrderedDict()  # topic, or a sequence number
        self._events = 0
        self._ready = asyncio.Event()
        self.dropped = 0
        self.coalesced = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, message: Message) -> int:
        """Queue `message`; returns how many old messages were dropped to make room (0 or 1)."""
        dropped = 0
        key = self._key(message)
        if key in self._items:
            self.coalesced += 1
            self._items[key] = message  # keep its place in line
        else:
            if len(self._items) >= self.max_messages:
                self._items.popitem(last=False)
                self.dropped += 1
                dropped = 1
            self._items[key] = message
        self._ready.set()
        return dropped

    def _key(self, message: Message) -> str | int:
        if message.coalesce:
            return message.topic
        self._events += 1
        return self._events

    def take(self) -> Message | None:
        """The oldest waiting message, or None."""
        if not self._items:
            self._ready.clear()
            return None
        _, message = self._items.popitem(last=False)
        if not self._items:
            self._ready.clear()
        return message

    def requeue(self, message: Message) -> None:
        """Put back a message that could not be sent, at the front, unless a newer one waits."""
        key = self._key(message)
        if key in self._items:
            return
        self._items[key] = message
        self._items.move_to_end(key, last=False)
        while len(self._items) > self.max_messages:
            self._items.popitem(last=True)
            self.dropped += 1
        self._ready.set()

    async def wait(self) -> None:
        """Until something is waiting."""
        await self._ready.wait()
