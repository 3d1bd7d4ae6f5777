"""The shared ``/jsz`` poller: at most ~2 GETs per second per (monitoring node, account).

KEDA's ``nats-jetstream`` scaler fetches the whole account listing (every stream, every
consumer) once per ScaledObject per poll. Here every scaler reading the same endpoint and
account holds the same `JszPoller` (through the ClientPool). Calls to `JszPoller.lag` that
arrive within `JszPoller.window` of the first one (the same event-loop iteration plus a few
milliseconds) form one *batch*, answered from ONE ``GET <scheme>://<endpoint>/jsz?acc=<account>
&consumers=true&config=true``.

Objects poll at their own phases, so batches alone coalesce little: 1000 objects x 1 s spread
over the second made ~10 GETs a second, each listing every consumer of the account (megabytes of
JSON a second at 1000 consumers). Each node's answer is therefore kept as a *snapshot* and
reused by later batches whose samples are at most `JszPoller.max_age` (0.5 s) younger than the
one that fetched it (measured on the samples' own ``now``: a poll's start), and a GET in flight
is joined rather than repeated (single flight). On a standalone server a sample served from the
last answer needs no batch at all; once that answer is older than `max_age` (and younger than
twice that) it still serves while the next GET, started by the first such sample, is on its
way -- so polls do not queue behind a slow GET. A sample is thus at most half a second (one
second while a refresh is in flight) plus one request older than its poll, and a node is asked
about twice a second however many objects read it. A push wake-up must not be answered from a
snapshot that predates the event: the scaler passes the wake-up's loop time as ``not_before``,
and only a GET sent after it will do. Failures are never kept: the next batch asks again.

Clustered JetStream (``meta_cluster.cluster_size > 1``): only a consumer's *leader* knows its
real ``num_pending`` (followers report 0). Like KEDA, the poller lists the cluster's nodes from
the seed's ``/varz`` (``connect_urls``: each node's host with the seed's monitoring port; else
``server_name`` plus ``cluster.urls`` as ``<node>.<seed host>``), learns each node's
``server_name`` and reads every consumer from the node whose name is the consumer's
``cluster.leader``. Leaders are remembered, so a steady tick costs one ``/jsz`` per node that
leads a requested consumer (at most one per server), and discovery runs again only when a
leader is not on a known node. A consumer whose leader cannot be read is an error, never the
follower's numbers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from scaler.clients import ClientPool
from scaler.errors import QueryError, ScalerError
from scaler.lease_slot import LeaseSlot
from scalers.http_common import HttpAuth, HttpSource
from scalers.nats_jsz import ConsumerLag, JszView, Key, MonitorTarget, parse_jsz

log = logging.getLogger(__name__)

_NO_AUTH = HttpAuth(headers={}, query={}, ssl=True, fingerprint="", secrets=())


@dataclass(frozen=True, slots=True)
class _Failure:
    """A per-consumer failure inside a batch; each waiter raises its own fresh exception."""

    kind: type[ScalerError]
    message: str

    def exception(self) -> ScalerError:
        return self.kind(self.message)


Answer = ConsumerLag | _Failure


class _Batch:
    __slots__ = ("done", "keys", "not_before", "now")

    def __init__(self) -> None:
        self.keys: set[Key] = set()
        self.done: asyncio.Future[dict[Key, Answer]] = asyncio.get_running_loop().create_future()
        self.now: tuple[float, float] | None = None  # (oldest, newest) sample time of the calls
        self.not_before = -math.inf  # loop time a reused snapshot's GET must not predate

    def join(self, key: Key, now: float | None, not_before: float) -> None:
        self.keys.add(key)
        self.not_before = max(self.not_before, not_before)
        if now is None:  # a caller without a sample time takes no snapshot
            self.now = (-math.inf, math.inf)
        elif self.now is None:
            self.now = (now, now)
        else:
            self.now = (min(self.now[0], now), max(self.now[1], now))


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """One node's /jsz GET (in flight or answered): when it was sent, by loop time and by the
    sample time of the batch that asked."""

    sent: float
    now: float
    view: asyncio.Future[JszView]

    def serves(self, batch: _Batch, max_age: float) -> bool:
        if self.sent < batch.not_before or batch.now is None:
            return False
        if self.view.done() and (self.view.cancelled() or self.view.exception() is not None):
            return False  # failures are never reused
        oldest, newest = batch.now
        return self.now <= oldest and newest - self.now <= max_age


class JszPoller:
    """Shared by every scaler on one (monitoring endpoint, account); see the module docstring."""

    window = 0.005  # seconds a batch stays open after its first call
    max_age = 0.5  # seconds of sample time a node's answer serves later batches (the docstring)

    def __init__(self, target: MonitorTarget, clients: ClientPool) -> None:
        self.target = target
        self._clients = clients
        self._seed = target.base
        self._sources: dict[str, HttpSource] = {}
        self._open: _Batch | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._names: dict[str, str] = {}  # node base URL -> server_name (clustered only)
        self._leaders: dict[Key, str] = {}  # consumer -> base URL of its leader's node
        self._snapshots: dict[str, _Snapshot] = {}  # node base URL -> its latest /jsz GET
        self._answered: dict[str, _Snapshot] = {}  # node base URL -> its latest good answer
        self.jsz_requests = 0  # GET /jsz sent (for benchmarks)
        self.varz_requests = 0  # GET /varz sent (cluster discovery)

    async def lag(
        self,
        stream: str,
        consumer: str,
        now: float | None = None,
        not_before: float = -math.inf,
    ) -> ConsumerLag:
        """The consumer's counters from the current batch; ScalerError / QueryError otherwise.

        `now` is the sample's time (the poll's start): answers fetched for a sample up to
        `max_age` older are reused (None: always a GET of this batch's own). `not_before` is a
        loop time (a push wake-up's) the GET behind the answer must not predate."""
        key = (stream, consumer)
        if now is not None:
            view = self._standalone_view(now, not_before)
            if view is not None:  # no batch, no task, no wait: most samples
                found = view.consumers.get(key)
                if found is None:
                    raise self._missing(key, view.streams).exception()
                return found
        batch = self._open
        if batch is None:
            batch = self._open = _Batch()
            task = asyncio.create_task(self._run(batch), name=f"jsz {self.target.base}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        batch.join(key, now, not_before)
        try:
            answers = await asyncio.shield(batch.done)
        except ScalerError as exc:
            raise type(exc)(*exc.args) from exc
        answer = answers[key]
        if isinstance(answer, _Failure):
            raise answer.exception()
        return answer

    async def _run(self, batch: _Batch) -> None:
        try:
            await asyncio.sleep(self.window)
        finally:
            if self._open is batch:
                self._open = None
        try:
            answers = await self._resolve(batch)
        except asyncio.CancelledError:  # the poller is closing: waiters must not hang
            batch.done.set_exception(ScalerError("nats-jetstream: the /jsz poller was closed"))
            batch.done.exception()
            raise
        except ScalerError as exc:
            batch.done.set_exception(exc)
        except Exception as exc:  # a bug must still wake the waiters, as an error
            batch.done.set_exception(
                ScalerError(f"nats-jetstream: /jsz poll failed ({type(exc).__name__}: {exc})")
            )
        else:
            batch.done.set_result(answers)
        batch.done.exception()  # retrieved here: every waiter raises its own copy

    # -- one batch -----------------------------------------------------------------------------

    async def _resolve(self, batch: _Batch) -> dict[Key, Answer]:
        keys = batch.keys
        views: dict[str, JszView] = {}
        first = {self._leaders.get(k, self._seed) for k in keys}
        failed = await self._fetch(first, views, batch)
        if failed:  # a remembered leader's node failed: forget it, ask the seed too
            for url in failed:
                self._forget_node(url)
            if self._seed not in views and self._seed not in failed:
                failed.update(await self._fetch({self._seed}, views, batch))
        if not views:
            raise failed.get(self._seed) or next(iter(failed.values()))
        answers: dict[Key, Answer] = {}
        if all(view.cluster_size <= 1 for view in views.values()):
            self._leaders.clear()
            self._names.clear()
            for key in keys:
                answers[key] = self._standalone(key, views)
            return answers
        return await self._clustered(batch, views, failed)

    def _standalone(self, key: Key, views: Mapping[str, JszView]) -> Answer:
        view = views.get(self._seed) or next(iter(views.values()))
        found = view.consumers.get(key)
        return found if found is not None else self._missing(key, view.streams)

    async def _clustered(
        self, batch: _Batch, views: dict[str, JszView], failed: dict[str, ScalerError]
    ) -> dict[Key, Answer]:
        keys = batch.keys
        rediscovered = not self._names
        if rediscovered:
            await self._discover()
        answers: dict[Key, Answer] = {}
        while True:  # ends: each pass fetches nodes not fetched yet, from a finite set
            wanted: set[str] = set()
            unknown_leader = False
            for key in keys:
                if key in answers:
                    continue
                answer, need = self._from_leader(key, views)
                if answer is not None:
                    answers[key] = answer
                elif need is None:  # not seen anywhere yet: every node may hold it
                    wanted.update(self._names)
                elif need:
                    wanted.add(need)
                else:
                    unknown_leader = True
            if unknown_leader and not rediscovered:  # a leader on no known node: list them again
                rediscovered = True
                await self._discover()
                continue
            wanted -= views.keys() | failed.keys()
            if not wanted:
                break
            failed.update(await self._fetch(wanted, views, batch))
        for key in keys:
            if key not in answers:
                answers[key] = self._unresolved(key, views, failed)
        return answers

    def _from_leader(
        self, key: Key, views: Mapping[str, JszView]
    ) -> tuple[Answer | None, str | None]:
        """(answer, "") when a fetched view is the leader's (or standalone); else (None, URL of
        the leader's node, or "" when that node is unknown) -- or (None, None) when no fetched
        node has the consumer at all."""
        leader = ""
        seen = False
        for url, view in views.items():
            found = view.consumers.get(key)
            if found is None:
                continue
            seen = True
            if view.cluster_size <= 1:
                return found, ""
            leader = found.leader or leader
            if leader and self._names.get(url) == leader:
                self._leaders[key] = url
                return found, ""
        if not seen:
            return None, None
        self._leaders.pop(key, None)
        return None, self._node_of(leader) if leader else ""

    def _unresolved(
        self, key: Key, views: Mapping[str, JszView], failed: Mapping[str, ScalerError]
    ) -> Answer:
        streams = frozenset().union(*(v.streams for v in views.values()))
        leaders = {v.consumers[key].leader for v in views.values() if key in v.consumers}
        if not leaders:
            if failed:  # a node we could not read may hold it: not "missing"
                exc = next(iter(failed.values()))
                return _Failure(ScalerError, f"{exc} (while looking for the consumer)")
            return self._missing(key, streams)
        leader = next(iter(leaders)) or "(none: election in progress)"
        return _Failure(
            ScalerError,
            f"nats-jetstream: consumer '{key[1]}' of stream '{key[0]}': its leader {leader} is"
            f" not readable through the monitoring endpoints of {self._seed}",
        )

    def _missing(self, key: Key, streams: Iterable[str]) -> _Failure:
        stream, consumer = key
        where = f"account '{self.target.account}' at {self._seed}"
        if stream not in set(streams):
            return _Failure(QueryError, f"nats-jetstream: stream '{stream}' not found in {where}")
        return _Failure(
            QueryError,
            f"nats-jetstream: consumer '{consumer}' not found in stream '{stream}' ({where})",
        )

    # -- cluster nodes -------------------------------------------------------------------------

    def _node_of(self, name: str) -> str:
        for url, node_name in self._names.items():
            if node_name == name:
                return url
        return ""

    def _forget_node(self, url: str) -> None:
        self._leaders = {k: v for k, v in self._leaders.items() if v != url}

    async def _discover(self) -> None:
        """Map every cluster node's monitoring URL to its server_name (KEDA's method)."""
        seed = await self._varz(self._seed)
        names: dict[str, str] = {}
        connect_urls = [u for u in seed.get("connect_urls") or () if isinstance(u, str)]
        if connect_urls:
            hosts = {_host_of(u) for u in connect_urls}
            for host in sorted(hosts):
                url = self.target.with_host(host)
                try:
                    info = await self._varz(url)
                except ScalerError as exc:  # a node down must not hide the others
                    log.warning(
                        "nats node unreachable during leader discovery",
                        extra={"node": url, "error": str(exc)},
                    )
                    continue
                names[url] = str(info.get("server_name") or "")
        else:
            seed_name = str(seed.get("server_name") or "")
            if seed_name:
                names[self._seed] = seed_name
            cluster = seed.get("cluster") or {}
            for route in cluster.get("urls") or () if isinstance(cluster, dict) else ():
                node = _host_of(str(route)).split(".", 1)[0]
                if node and node not in names.values():
                    names[self.target.with_host(f"{node}.{self.target.host}")] = node
        self._names = names
        self._leaders = {k: v for k, v in self._leaders.items() if v in names}

    async def _varz(self, url: str) -> dict[str, Any]:
        self.varz_requests += 1
        body = await self._source(url).get(f"{url}/varz")
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise QueryError(f"nats-jetstream: GET {url}/varz: not JSON") from exc
        if not isinstance(doc, dict):
            raise QueryError(f"nats-jetstream: GET {url}/varz: not a JSON object")
        return doc

    # -- HTTP ----------------------------------------------------------------------------------

    async def _fetch(
        self, urls: Iterable[str], views: dict[str, JszView], batch: _Batch
    ) -> dict[str, ScalerError]:
        """Each node's /jsz (a snapshot that serves `batch`, else a GET, all at once); the views
        land in `views`, failures are returned."""
        todo = sorted(set(urls))
        results = await asyncio.gather(
            *(self._view(url, batch) for url in todo), return_exceptions=True
        )
        failed: dict[str, ScalerError] = {}
        for url, result in zip(todo, results, strict=True):
            if isinstance(result, JszView):
                views[url] = result
            elif isinstance(result, ScalerError):
                failed[url] = result
            elif isinstance(result, BaseException):
                raise result
        return failed

    def _standalone_view(self, now: float, not_before: float) -> JszView | None:
        """The seed's last answer when it may serve a sample at `now` without waiting: a
        standalone server's, sent after `not_before`, fetched for a sample at most `max_age`
        older -- or up to twice that while a newer GET is on its way (started here, once), so
        polls do not pile up behind a slow GET (1000 objects a second would fill the poll
        slots within a few hundred ms)."""
        last = self._answered.get(self._seed)
        if last is None or last.sent < not_before or now < last.now:
            return None
        view = last.view.result()
        if view.cluster_size > 1:
            return None  # read from each consumer's leader: the batch path
        age = now - last.now
        if age <= self.max_age:
            return view
        if age >= 2 * self.max_age:
            return None
        if self._snapshots.get(self._seed) is last:  # no newer GET yet: start one
            self._fetch_snapshot(self._seed, now)
        return view

    def _fetch_snapshot(self, url: str, now: float) -> _Snapshot:
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._jsz(url), name=f"jsz GET {url}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        snap = self._snapshots[url] = _Snapshot(loop.time(), now, task)
        task.add_done_callback(lambda _: self._answer_in(url, snap))
        return snap

    def _answer_in(self, url: str, snap: _Snapshot) -> None:
        if snap.view.cancelled() or snap.view.exception() is not None:
            return
        last = self._answered.get(url)
        if last is None or last.sent < snap.sent:
            self._answered[url] = snap

    async def _view(self, url: str, batch: _Batch) -> JszView:
        """`url`'s snapshot when it serves `batch` (joined while in flight), else a new GET."""
        snap = self._snapshots.get(url)
        if snap is None or not snap.serves(batch, self.max_age):
            assert batch.now is not None
            snap = self._fetch_snapshot(url, batch.now[1])
        try:
            return await asyncio.shield(snap.view)
        except ScalerError as exc:  # shared by the batches that joined: each raises its own
            raise type(exc)(*exc.args) from exc

    async def _jsz(self, url: str) -> JszView:
        self.jsz_requests += 1
        params = {"acc": self.target.account, "consumers": "true", "config": "true"}
        body = await self._source(url).get(f"{url}/jsz", params)
        return parse_jsz(body, self.target.account)

    def _source(self, url: str) -> HttpSource:
        source = self._sources.get(url)
        if source is None:
            source = HttpSource("nats-jetstream", url, _NO_AUTH, self.target.timeout, self._clients)
            self._sources[url] = source
        return source

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._snapshots.clear()
        self._answered.clear()
        sources, self._sources = list(self._sources.values()), {}
        for source in sources:
            await source.aclose()


def _host_of(address: str) -> str:
    """The host of ``host:port`` / ``scheme://host:port`` / ``[v6]:port``."""
    parts = urlsplit(address if "://" in address else f"//{address}")
    return parts.hostname or address.rsplit(":", 1)[0]


async def _new_poller(target: MonitorTarget, clients: ClientPool) -> JszPoller:
    return JszPoller(target, clients)


async def _close_poller(poller: JszPoller) -> None:
    await poller.aclose()


def poller_slot(target: MonitorTarget, clients: ClientPool) -> LeaseSlot[JszPoller]:
    """One holder's slot for the shared poller of `target`'s endpoint and account."""
    return LeaseSlot(
        clients,
        f"nats-jetstream monitoring {target.base}",
        target.key,
        lambda: _new_poller(target, clients),
        _close_poller,
    )
