"""Shard fencing corner cases (scaler/kube/members.py, scaler/inputs.py claims) that need an API
server answering *late on demand*: a renew that commits 9 s after it started, a joiner's create
committing 7.9 s into its round, a GET answered after the watch reported a deletion. A real
kube-apiserver cannot be made to do that at a chosen moment, so these tests use a small fake
holding Leases in memory (and a fake monotonic clock); the same rules run against the real
API server in tests/e2e/test_shard_members.py and tests/e2e/test_shards_processes.py.

Each case failed before the fixes found in review: two writers after a slow renew; a joiner
counting its joining period from before its Lease was visible; one malformed Lease ending the
membership loop on every replica; a claim bringing back a deleted object; one bad formula
ending the claim loop.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from scaler.errors import KubeError
from scaler.inputs import Inputs
from scaler.kube.members import MemberLeases, MemberSettings
from scaler.settings import WatchSettings
from scaler.shards import Member, Ring
from scaler.store import MetricStore
from scaler.table import ObjectTable
from scaler.telemetry import Telemetry


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Apiserver:
    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.rv = 0

    def commit(self, body: dict) -> dict:
        self.rv += 1
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.leases[obj["metadata"]["name"]] = obj
        return copy.deepcopy(obj)


class FakeKube:
    def __init__(self, api: Apiserver) -> None:
        self.api = api
        self.hold: asyncio.Event | None = None  # a write waits for it before committing
        self.fail_writes = False
        self.fail_lists = False

    async def get(self, path: str, **query: object) -> dict:
        if self.fail_lists:
            raise KubeError("list failed", 500)
        return {"items": [copy.deepcopy(v) for v in self.api.leases.values()]}

    async def get_or_none(self, path: str) -> dict | None:
        obj = self.api.leases.get(path.rsplit("/", 1)[1])
        return copy.deepcopy(obj) if obj else None

    async def _write(self, body: dict) -> dict:
        if self.fail_writes:
            raise KubeError("write failed", 500)
        if self.hold is not None:
            await self.hold.wait()
        return self.api.commit(body)

    async def create(self, path: str, body: dict) -> dict:
        return await self._write(body)

    async def replace(self, path: str, body: dict) -> dict:
        live = self.api.leases.get(path.rsplit("/", 1)[1])
        if live is None:
            raise KubeError("gone", 404)
        if body["metadata"].get("resourceVersion") != live["metadata"]["resourceVersion"]:
            raise KubeError("conflict", 409)
        return await self._write(body)

    async def request(self, method: str, path: str, **kw: object) -> dict:
        return {}


def member(api: Apiserver, clock: Clock, identity: str) -> tuple[MemberLeases, FakeKube]:
    kube = FakeKube(api)
    m = MemberLeases(
        kube,  # type: ignore[arg-type]
        MemberSettings("ns", "tidal", identity, f"{identity}:6444", 15.0, 10.0, 2.0),
        clock=lambda: 1e9 + clock.t,
        monotonic=clock,
    )
    return m, kube


def key_moving(frm: str, to: str, before: tuple[str, ...], after: tuple[str, ...]):
    """An object `frm` owns in ring `before` and `to` owns in ring `after`."""
    r1 = Ring.of(Member(i, "") for i in before)
    r2 = Ring.of(Member(i, "") for i in after)
    for i in range(10_000):
        k = ("ns", f"obj-{i}")
        if r1.owner(k).identity == frm and r2.owner(k).identity == to:  # type: ignore[union-attr]
            return k
    raise AssertionError("no such key")


def writes(m: MemberLeases, key) -> bool:
    return m.may_write() and m.owns(key)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_slow_renew_after_fast_failures_leaves_two_writers() -> None:
    """A's renews fail fast for 8.9 s, then one renew commits 9 s after it started (inside the
    10 s renew deadline). A's successful rounds started < 10 s apart, so A detects no lapse and
    may write until 10 s after that round's start; B saw A's Lease unchanged for 15 s (from
    the last commit before the failures), dropped A and took A's objects over."""

    async def main() -> None:
        clock = Clock()
        api = Apiserver()
        a, ka = member(api, clock, "a")
        b, _kb = member(api, clock, "b")
        x = key_moving("a", "b", ("a", "b"), ("b",))
        for t in range(0, 16):
            clock.t = float(t)
            assert await a.attempt()
            assert await b.attempt()
        assert writes(a, x)
        assert not writes(b, x)
        ka.fail_writes = True  # A's last good renew started (and committed) at t=15
        for t in (17.0, 19.0, 21.0, 23.0):
            clock.t = t
            assert not await a.attempt()

            assert await b.attempt()
        ka.fail_writes = False
        clock.t = 23.9  # this renew is in flight until t=32.9
        ka.hold = asyncio.Event()
        slow = asyncio.ensure_future(a.attempt())
        await _settle()
        for t in (25.0, 27.0, 29.0, 30.1, 32.0):
            clock.t = t
            assert await b.attempt()
        assert writes(b, x), "B dropped A (15 s without a new version) and owns x"
        clock.t = 32.9
        ka.hold.set()
        assert await slow
        clock.t = 33.0
        assert writes(b, x)
        assert not writes(a, x), "A and B both may write x at t=33"

    asyncio.run(main())


def test_a_joiner_whose_create_commits_late_overlaps_the_old_owner() -> None:
    """The joiner's joining period counts from its round's START, not from when its Lease
    became visible. Its create commits 7.9 s after the round started (a slow apiserver; a round
    over ~8 s would make its next round count as a lapse); the old owner listed just before
    that, then its rounds fail, so it stays fresh until 10 s after its last round's start,
    2.8 s past the joiner's 15 s."""

    async def main() -> None:
        clock = Clock()
        api = Apiserver()
        b, kb = member(api, clock, "b")
        for t in range(0, 100, 2):
            clock.t = float(t)
            assert await b.attempt()
        x = key_moving("b", "j", ("b",), ("b", "j"))
        assert writes(b, x)
        j, kj = member(api, clock, "j")
        clock.t = 100.0  # J's first round starts
        kj.hold = asyncio.Event()
        join = asyncio.ensure_future(j.attempt())
        await _settle()
        for t in (102.0, 104.0, 106.0, 107.8):
            clock.t = t
            assert await b.attempt()  # J's Lease not committed yet
        clock.t = 107.9  # J's create commits 7.9 s into its first round
        kj.hold.set()
        assert await join
        kj.hold = None
        kb.fail_lists = True  # B's next rounds fail (slow apiserver); B fresh until 117.8
        for t in (109.8, 111.8, 113.8, 115.8):
            clock.t = t
            assert not await b.attempt()
            clock.t = t + 0.1
            assert await j.attempt()
        # J's joining period counts from 107.9 (its Lease visible), not 100: at no moment may
        # both write x, and J writes x once B's last fresh round is over.
        for t in (116.0, 117.0, 117.9, 118.0, 123.0):
            clock.t = t
            assert not (writes(j, x) and writes(b, x)), f"J and B both may write x at {t}"
        assert writes(j, x)

    asyncio.run(main())


def test_one_malformed_lease_in_the_group_does_not_end_the_membership_loop() -> None:
    """Any Lease with the group label and a leaseDurationSeconds that is not a number (or a
    metadata without resourceVersion...) raises out of _update_ring, which runs outside
    attempt()'s try: run() ends, the task's exception is never looked at, may_write() goes
    False for good and /readyz stays OK. Every replica lists the same Lease: all stop."""

    async def main() -> None:
        clock = Clock()
        api = Apiserver()
        a, _ = member(api, clock, "a")
        assert await a.attempt()
        api.commit(
            {
                "metadata": {"name": "stray", "labels": {"tidal.sh/shard-group": "tidal"}},
                "spec": {"holderIdentity": "x", "leaseDurationSeconds": "15s"},
            }
        )
        clock.t = 2.0
        await a.attempt()  # must not raise

    asyncio.run(main())


RAW = {
    "apiVersion": "keda.sh/v1alpha1",
    "kind": "ScaledObject",
    "metadata": {
        "name": "worker",
        "namespace": "shop",
        "uid": "u-1",
        "generation": 1,
        "resourceVersion": "10",
        "creationTimestamp": "2026-12-01T00:00:00Z",
    },
    "spec": {
        "scaleTargetRef": {"name": "worker"},
        "triggers": [{"type": "redis", "metadata": {"listName": "jobs", "listLength": "5"}}],
    },
}


class HeldKube:
    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def get_or_none(self, path: str) -> dict:
        snapshot = copy.deepcopy(RAW)  # read before the delete below was committed
        await self.release.wait()  # ... and answered after the watch reported it
        return snapshot


def test_a_claim_whose_get_overlaps_a_delete_admits_the_deleted_object() -> None:
    async def main() -> None:
        kube = HeldKube()
        table = ObjectTable(
            MetricStore(),
            Telemetry(),
            lambda uids: None,
            clock=lambda: 1.8e9,
            on_lateness=lambda key, lateness: None,
        )
        inputs = Inputs(
            kube,  # type: ignore[arg-type]
            WatchSettings(),
            table,
            None,  # type: ignore[arg-type]  (not reached)
            None,  # type: ignore[arg-type]
            may_write=lambda: True,
            owns=lambda key: True,
        )
        key = ("shop", "worker")
        claim = asyncio.ensure_future(inputs._claim(key))
        await asyncio.sleep(0)
        await inputs._on_scaled_object("DELETED", copy.deepcopy(RAW))  # the watch: deleted
        kube.release.set()
        assert await claim
        assert table.get(key) is None, "the deleted ScaledObject was admitted by the claim"

    asyncio.run(main())


def _with_formula(formula: str) -> dict:
    raw = copy.deepcopy(RAW)
    raw["spec"]["triggers"][0]["name"] = "a"
    raw["spec"]["advanced"] = {"scalingModifiers": {"formula": formula, "target": "5"}}
    return raw


def test_a_formula_that_overflows_the_parser_stack_kills_the_claim_loop() -> None:
    """`-` x 1200 + `a` (1201 characters, under MAX_LENGTH) makes the recursive-descent parser
    raise RecursionError, not FormulaError: object_parser does not turn it into a ConfigError;
    in `_claim` it escapes `asyncio.gather` in `run_claims`, whose task ends, so this replica
    never claims another object (every later ring change leaves its new objects unpolled)."""

    async def main() -> None:
        class Kube:
            async def get_or_none(self, path: str) -> dict:
                return _with_formula("-" * 1200 + "a")

        table = ObjectTable(
            MetricStore(),
            Telemetry(),
            lambda uids: None,
            clock=lambda: 1.8e9,
            on_lateness=lambda key, lateness: None,
        )
        inputs = Inputs(
            Kube(),  # type: ignore[arg-type]
            WatchSettings(),
            table,
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            may_write=lambda: True,
            owns=lambda key: True,
        )
        inputs.scaled_objects.objects[("shop", "worker")] = {"metadata": {}}
        loop = asyncio.ensure_future(inputs.run_claims())
        inputs.rebalance()
        await asyncio.sleep(0.2)
        assert not loop.done(), f"run_claims ended: {loop.exception()!r}"
        loop.cancel()

    asyncio.run(main())


def test_the_write_window_is_what_the_last_complete_round_leaves_of_the_renew_deadline() -> None:
    """`write_window()` bounds how long a write may wait for a connection (KubeClient): the
    renew deadline counted from the start of the last complete round, 0 while joining, after
    the deadline, and when leaving."""

    async def main() -> None:
        clock = Clock()
        api = Apiserver()
        a, ka = member(api, clock, "a")
        assert a.write_window() == 0.0  # no round yet
        clock.t = 1.0
        assert await a.attempt()
        for t in (3.0, 5.0, 7.0, 9.0, 11.0, 13.0, 15.0):
            clock.t = t
            assert await a.attempt()
            assert a.write_window() == 0.0  # joined at 1 s: writes after a lease duration
        clock.t = 16.0
        assert await a.attempt()
        clock.t = 19.5
        assert a.write_window() == pytest.approx(6.5)  # 16 + 10 - 19.5
        ka.fail_writes = True
        clock.t = 25.9
        assert not await a.attempt()
        assert a.write_window() == pytest.approx(0.1)
        clock.t = 26.0
        assert a.write_window() == 0.0
        ka.fail_writes = False
        clock.t = 27.0
        assert await a.attempt()
        assert a.write_window() == 0.0  # its view lapsed: it joins again, a lease duration
        for t in range(29, 44, 2):
            clock.t = float(t)
            assert await a.attempt()
        clock.t = 44.0
        assert a.write_window() == pytest.approx(9.0)  # 43 + 10 - 44
        await a.release()
        assert a.write_window() == 0.0  # leaving

    asyncio.run(main())
