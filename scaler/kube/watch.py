"""List-then-watch of one resource collection, with bookmarks, relist on 410 and backoff."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Literal

from scaler.errors import KubeError
from scaler.kube.client import JSON, PARTIAL_ITEM, PARTIAL_LIST, KubeClient

log = logging.getLogger(__name__)

EventType = Literal["ADDED", "MODIFIED", "DELETED"]
Handler = Callable[[EventType, JSON], Awaitable[None]]
YIELD_EVERY = 20  # events handled between yields to the event loop
# Objects per list request, as client-go's reflector pages: a list of 10,000 objects is never one
# multi-megabyte body decoded in one piece on the loop (and held whole while it is handled).
LIST_PAGE_SIZE = 500
# One jitter source for every Backoff: a random.Random is ~2.7 KiB of state, and each object's
# push loop holds a Backoff (2.7 MiB at 1000 objects when each had its own).
_JITTER = random.Random()


@dataclass(slots=True)
class Backoff:
    """Jittered exponential backoff: base·2^n capped, ±50 % jitter."""

    base: float = 0.5
    cap: float = 30.0
    attempt: int = 0
    rng: random.Random = _JITTER

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * (2**self.attempt))
        self.attempt += 1
        return float(delay * (0.5 + self.rng.random()))

    def reset(self) -> None:
        self.attempt = 0


def object_key(obj: JSON) -> tuple[str, str]:
    """(namespace, name) of an API object ("" for a cluster-scoped object's namespace)."""
    meta = obj.get("metadata", {})
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))


class Watcher:
    """Keeps a local copy of a collection in sync and calls `handler` on every change.

    `path` is a collection URL such as ``/apis/keda.sh/v1alpha1/scaledobjects``. After a (re)list,
    objects that vanished meanwhile are reported as DELETED and the rest as ADDED/MODIFIED, so a
    handler never misses a change across a dropped stream or a 410.
    """

    def __init__(
        self,
        kube: KubeClient,
        path: str,
        handler: Handler,
        *,
        label_selector: str | None = None,
        watch_timeout: int = 300,
        name: str = "",
        keep: Callable[[JSON], JSON] | None = None,
        metadata_only: bool = False,
        index: Callable[[JSON], Hashable] | None = None,
        page_size: int = LIST_PAGE_SIZE,
    ) -> None:
        self._kube = kube
        self._path = path
        self._handler = handler
        self._selector = label_selector
        self._watch_timeout = watch_timeout
        self.name = name or path
        # `keep` reduces each object to the fields the caller reads from `objects` before it is
        # cached (it must keep metadata.resourceVersion), so a watch of 1000 Deployments holds
        # replica counts, not pod templates. Handlers still receive the whole object; an object
        # found gone at a relist is reported DELETED with its kept form.
        self._keep = keep or (lambda obj: obj)
        self._metadata_only = metadata_only
        self.objects: dict[tuple[str, str], JSON] = {}
        # `index` maps a kept object to a value; `indexed(value)` answers in O(matches) instead
        # of a scan of `objects` (client-go's Indexer): e.g. HPAs by the workload they scale.
        self._index = index
        self._by_index: dict[Hashable, set[tuple[str, str]]] = {}
        self.synced = asyncio.Event()
        # Monotonic time of the first failure since the last successful (re)list; None while
        # healthy. A reader that must not take an old cache for the present checks it.
        self.failing_since: float | None = None
        self.relists = 0
        self._page_size = page_size
        self.list_pages = 0  # list requests made (pages of every (re)list)
        self._backoff = Backoff()

    async def run(self) -> None:
        """Runs until cancelled; never raises for API errors (logs and retries with backoff)."""
        while True:
            try:
                rv = await self._list()
                await self._watch(rv)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a watch must outlive anything the server sends
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                delay = self._backoff.next_delay()
                log.warning(
                    "watch failed; retrying",
                    extra={
                        "watch": self.name,
                        "error": f"{type(exc).__name__}: {exc}",
                        "retry_in_s": round(delay, 2),
                    },
                )
                await asyncio.sleep(delay)

    async def _list(self) -> str:
        """(Re)list in pages of `page_size` (limit + continue: one consistent snapshot, each
        page decoded on its own) and bring the cache to it; returns the list's
        resourceVersion, where the watch resumes.

        The first list hands each page to the handler as it arrives. A relist reads every page
        first and reports what the cache held and the list no longer has as DELETED before the
        rest, as an unpaged relist did: a build running between two pages must not find an
        object that is gone beside the one that replaced it."""
        first = not self.objects
        pending: list[JSON] = []  # a relist's items, handled once every page is in
        seen: set[tuple[str, str]] = set()
        rv = ""
        async for page, restarted in self._pages():
            if restarted:  # a new snapshot: only what it holds counts as seen
                seen.clear()
                pending.clear()
                first = not self.objects
            rv = str((page.get("metadata") or {}).get("resourceVersion") or rv)
            items = page.get("items") or []
            seen.update(object_key(item) for item in items)
            if first:
                await self._apply(items)
            else:
                pending.extend(items)
        self.relists += 1
        for k in [k for k in self.objects if k not in seen]:
            kept = self._drop(k)
            if kept is not None:
                await self._dispatch("DELETED", kept)
        await self._apply(pending)
        self.synced.set()
        self.failing_since = None
        self._backoff.reset()
        return rv

    async def _pages(self) -> AsyncIterator[tuple[JSON, bool]]:
        """The list's pages, each with whether the list started over at it. A continue token
        that expired (410: the snapshot was compacted away during a very long list) restarts
        the list unpaged, as client-go does."""
        accept = PARTIAL_LIST if self._metadata_only else "application/json"
        token, paged, restarted = "", True, False
        while True:
            query: dict[str, str | int] = {"limit": self._page_size} if paged else {}
            if self._selector:
                query["labelSelector"] = self._selector
            if token:
                query["continue"] = token
            try:
                page = await self._kube.get(self._path, accept=accept, **query)
            except KubeError as exc:
                if exc.status != 410 or not token:
                    raise
                log.info("list continuation expired; listing unpaged", extra={"watch": self.name})
                token, paged, restarted = "", False, True
                continue
            self.list_pages += 1
            yield page, restarted
            restarted = False
            token = str((page.get("metadata") or {}).get("continue") or "")
            if not token:
                return

    async def _apply(self, items: list[JSON]) -> None:
        """Store listed items and report the new and changed ones."""
        for n, item in enumerate(items, 1):
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a relist of thousands must not hold the loop
            previous = self._store(object_key(item), self._keep(item))
            if previous is None:
                await self._dispatch("ADDED", item)
            elif _rv(previous) != _rv(item):
                await self._dispatch("MODIFIED", item)

    async def _watch(self, rv: str) -> None:
        while True:
            query: dict[str, str | int] = {
                "watch": "1",
                "resourceVersion": rv,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": self._watch_timeout,
            }
            if self._selector:
                query["labelSelector"] = self._selector
            handled = 0
            async for event in self._kube.watch_lines(
                self._path,
                query,
                timeout=self._watch_timeout + 30,
                accept=PARTIAL_ITEM if self._metadata_only else "application/json",
            ):
                kind = event.get("type")
                obj = event.get("object", {})
                if kind == "ERROR":
                    if obj.get("code") == 410:  # resourceVersion too old: relist
                        log.info("watch expired; relisting", extra={"watch": self.name})
                        return
                    raise KubeError(f"watch error: {obj.get('message', '')}", obj.get("code"))
                new_rv = obj.get("metadata", {}).get("resourceVersion")
                if new_rv:
                    rv = str(new_rv)
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    self._drop(object_key(obj))
                    await self._dispatch("DELETED", obj)
                elif kind in ("ADDED", "MODIFIED"):
                    self._store(object_key(obj), self._keep(obj))
                    await self._dispatch(kind, obj)
                self._backoff.reset()
                handled += 1
                if handled % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # a burst of events must not hold the loop
            # The server closed the stream normally (timeoutSeconds): resume from rv.

    def indexed(self, value: Hashable) -> dict[tuple[str, str], JSON]:
        """The cached objects whose index value is `value`."""
        return {k: self.objects[k] for k in self._by_index.get(value, ())}

    def _store(self, key: tuple[str, str], kept: JSON) -> JSON | None:
        previous = self.objects.get(key)
        if previous is not None:
            self._unindex(key, previous)
        self.objects[key] = kept
        if self._index is not None:
            self._by_index.setdefault(self._index(kept), set()).add(key)
        return previous

    def _drop(self, key: tuple[str, str]) -> JSON | None:
        previous = self.objects.pop(key, None)
        if previous is not None:
            self._unindex(key, previous)
        return previous

    def _unindex(self, key: tuple[str, str], kept: JSON) -> None:
        if self._index is None:
            return
        value = self._index(kept)
        keys = self._by_index.get(value)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_index[value]

    async def _dispatch(self, kind: EventType, obj: JSON) -> None:
        try:
            await self._handler(kind, obj)
        except asyncio.CancelledError:
            raise
        except Exception:  # one bad object must never stop the watch (safety rule 6)
            log.exception(
                "watch handler failed", extra={"watch": self.name, "object": object_key(obj)}
            )


def _rv(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("resourceVersion", ""))
