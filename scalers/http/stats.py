"""Per-target request counts and the push stream that carries them to the daemon.

Every request start and end updates its target's in-flight count; every start also counts one
arrival. Each subscriber (a daemon's `http` trigger feed, over ``GET /v1/stream``) has its own
pending set: a change marks the target dirty there and wakes the subscriber's writer, which sends
one NDJSON line per dirty target -- ``{"k": "ns/name", "i": in_flight_now, "a":
arrivals_since_the_last_line}`` -- as soon as the event loop lets it. No interval: a burst of
10,000 arrivals costs a few lines (the writer coalesces what happened while it was writing), and
a request at a sleeping workload reaches the daemon within one loop turn.

A stream starts with ``{"hello": replica, "targets": n}`` followed by the targets that have
requests in flight (their arrivals already pushed elsewhere are not repeated). An idle stream
carries ``{}`` every `KEEPALIVE` seconds so both ends notice a dead peer; it is not a metric.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from scalers.http.routes import Key

KEEPALIVE = 15.0


@dataclass(slots=True, eq=False)
class _Subscriber:
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    pending: dict[Key, int] = field(default_factory=dict)  # dirty key -> arrivals not sent


class RequestStats:
    """In-flight and arrival counts per target, fanned out to stream subscribers."""

    def __init__(self, replica: str) -> None:
        self.replica = replica
        self.inflight: dict[Key, int] = {}
        self.arrivals: dict[Key, int] = {}
        self._subscribers: set[_Subscriber] = set()
        self._total = 0
        self.idle = asyncio.Event()  # set while nothing is in flight
        self.idle.set()
        self.closed = False

    def total_inflight(self) -> int:
        return self._total

    def started(self, key: Key) -> int:
        """One request for `key` arrived; returns the in-flight count including it."""
        now = self.inflight[key] = self.inflight.get(key, 0) + 1
        self._total += 1
        self.idle.clear()
        self.arrivals[key] = self.arrivals.get(key, 0) + 1
        for sub in self._subscribers:
            sub.pending[key] = sub.pending.get(key, 0) + 1
            sub.wake.set()
        return now

    def finished(self, key: Key) -> None:
        left = self.inflight.get(key, 0) - 1
        self._total -= 1
        if not self._total:
            self.idle.set()
        if left > 0:
            self.inflight[key] = left
        else:
            self.inflight.pop(key, None)
        for sub in self._subscribers:
            sub.pending.setdefault(key, 0)
            sub.wake.set()

    def close(self) -> None:
        """End every stream (the process is stopping)."""
        self.closed = True
        for sub in self._subscribers:
            sub.wake.set()

    def _line(self, key: Key, arrived: int) -> dict[str, object]:
        return {"k": f"{key[0]}/{key[1]}", "i": self.inflight.get(key, 0), "a": arrived}

    async def stream(self) -> AsyncIterator[bytes]:
        """The NDJSON chunks of one subscriber, until the consumer stops iterating."""
        sub = _Subscriber()
        self._subscribers.add(sub)
        try:
            hello = {"hello": self.replica, "targets": len(self.inflight)}
            lines = [hello, *(self._line(k, 0) for k in self.inflight)]
            yield _encode(lines)
            while not self.closed:
                try:
                    await asyncio.wait_for(sub.wake.wait(), KEEPALIVE)
                except TimeoutError:
                    yield b"{}\n"
                    continue
                sub.wake.clear()
                pending, sub.pending = sub.pending, {}
                if pending:
                    yield _encode([self._line(k, a) for k, a in pending.items()])
        finally:
            self._subscribers.discard(sub)


def _encode(lines: list[dict[str, object]]) -> bytes:
    return b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines)
