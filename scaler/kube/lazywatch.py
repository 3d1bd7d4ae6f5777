"""Watches started on the first question and stopped when nobody asked for a while.

For what plugins read from the cluster by key (a Service's EndpointSlices, the pods a selector
matches): a thousand triggers asking about one key share one list-then-watch, and a key nobody
asks about for `idle_after` seconds costs nothing. Polls never LIST the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from scaler.errors import KubeError, QueryError
from scaler.kube.client import JSON, KubeClient
from scaler.kube.watch import EventType, Watcher

IDLE_AFTER = 300.0  # seconds without a question before a watch stops
SYNC_TIMEOUT = 10.0  # seconds a first question waits for the watch's initial list
STALE_AFTER = 10.0  # seconds a failing watch's cache is still served (a reconnect is quick)
MAX_WATCHES = 100  # beyond: one LIST per question (on the main client's pool)


@dataclass(slots=True)
class _Watched:
    watcher: Watcher
    task: asyncio.Task[None]
    used: float


async def _ignore(kind: EventType, obj: JSON) -> None:
    return None


class LazyWatches:
    def __init__(self, kube: KubeClient, *, idle_after: float = IDLE_AFTER) -> None:
        # Each watch holds a connection for as long as it runs: the transport keeps watches on
        # a pool of their own, so they never starve the writes and the Lease renewals.
        self._kube = kube
        self._idle_after = idle_after
        self._watched: dict[Hashable, _Watched] = {}
        self._janitor: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._watched)

    async def objects(
        self,
        key: Hashable,
        path: str,
        *,
        label_selector: str,
        keep: Callable[[JSON], JSON],
        what: str,
    ) -> list[JSON]:
        """The current objects of the collection `path` matching `label_selector` (kept by
        `keep`), from the watch for `key` — started now if there is none. QueryError when its
        first list does not complete within SYNC_TIMEOUT."""
        entry = self._watched.get(key)
        if entry is None and len(self._watched) >= MAX_WATCHES:
            try:
                body = await self._kube.get(path, labelSelector=label_selector)
            except KubeError as exc:
                raise QueryError(f"{what} could not be listed: {exc}") from exc
            return [keep(item) for item in body.get("items") or []]
        if entry is None:
            watcher = Watcher(
                self._kube,
                path,
                _ignore,
                label_selector=label_selector,
                keep=keep,
                name=what,
            )
            task = asyncio.create_task(watcher.run(), name=f"lazy watch {what}")
            entry = self._watched[key] = _Watched(watcher, task, time.monotonic())
            if self._janitor is None:
                self._janitor = asyncio.create_task(self._expire(), name="lazy watch janitor")
        entry.used = time.monotonic()
        if not entry.watcher.synced.is_set():
            try:
                async with asyncio.timeout(SYNC_TIMEOUT):
                    await entry.watcher.synced.wait()
            except TimeoutError:
                raise QueryError(
                    f"{what} could not be listed within {SYNC_TIMEOUT:.0f} s"
                ) from None
        failing = entry.watcher.failing_since
        if failing is not None and time.monotonic() - failing > STALE_AFTER:
            raise QueryError(
                f"{what}: the watch has been failing for {time.monotonic() - failing:.0f} s; "
                "its last state is not served as the present"
            )
        return list(entry.watcher.objects.values())

    async def _expire(self) -> None:
        while self._watched:
            await asyncio.sleep(self._idle_after / 5)
            now = time.monotonic()
            for key, entry in list(self._watched.items()):
                if now - entry.used > self._idle_after:
                    del self._watched[key]
                    entry.task.cancel()
        self._janitor = None

    async def aclose(self) -> None:
        tasks = [e.task for e in self._watched.values()]
        if self._janitor is not None:
            tasks.append(self._janitor)
        self._watched.clear()
        for t in tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)
