"""LeaderElector's state machine (client-go's rules) against an in-memory Lease, in virtual time.

Why not the real apiserver: these cases need a paused process whose clock jumps while the
others' does not, wall clocks hours apart, and a single PUT that never answers, each at an exact
moment. The real control plane cannot be made to do that on demand; the e2e test
(tests/e2e/test_leader_fencing.py) proves the end result with real processes and SIGSTOP.

Time is the event loop's (virtual: it jumps whenever the loop would sleep, see
tests/unit/test_scheduler.py), so "15 s" of election runs in microseconds and deadlines are
exact. A paused replica is one whose `attempt()` / `may_write()` are simply not called.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any, cast

import pytest

from scaler.errors import KubeError
from scaler.kube.client import JSON, KubeClient
from scaler.kube.lease import LeaderElector, LeaseSettings
from tests.unit.test_scheduler import VirtualTimeLoop, run_virtual

WALL0 = 1_700_000_000.0
SETTINGS = LeaseSettings("ns", "tidal-leader", "", 4.0, 3.0, 0.5)


class LeaseServer:
    """One Lease with resourceVersion preconditions, as kube-apiserver keeps it."""

    def __init__(self) -> None:
        self.lease: JSON | None = None
        self.rv = 0
        self.calls: list[tuple[str, str, str]] = []  # (client, verb, outcome)
        self.hang: set[str] = set()  # clients whose requests never answer
        self.cancelled: list[tuple[str, str]] = []

    def client(self, name: str) -> KubeClient:
        return cast(KubeClient, _Client(self, name))

    def writes(self, name: str, outcome: str = "ok") -> int:
        return sum(1 for c, v, o in self.calls if c == name and v != "GET" and o == outcome)

    def holder(self) -> str:
        assert self.lease is not None
        return str(self.lease["spec"]["holderIdentity"])

    def force(self, **spec: Any) -> None:
        """Someone else edits the Lease (a new resourceVersion)."""
        assert self.lease is not None
        self.rv += 1
        self.lease = {**self.lease, "spec": {**self.lease["spec"], **spec}}
        self.lease["metadata"] = {**self.lease["metadata"], "resourceVersion": str(self.rv)}


class _Client:
    def __init__(self, server: LeaseServer, name: str) -> None:
        self.server = server
        self.name = name

    async def _answer(self, verb: str) -> None:
        await asyncio.sleep(0)  # a round trip: other tasks run meanwhile
        if self.name in self.server.hang:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.server.cancelled.append((self.name, verb))
                raise

    async def get_or_none(self, path: str) -> JSON | None:
        await self._answer("GET")
        self.server.calls.append((self.name, "GET", "ok"))
        return copy.deepcopy(self.server.lease)

    def _store(self, verb: str, body: JSON, conflict: bool) -> JSON:
        """Keep `body` as the Lease with a new resourceVersion, or refuse it (409)."""
        s = self.server
        if conflict:
            s.calls.append((self.name, verb, "409"))
            raise KubeError("conflict", 409)
        s.rv += 1
        s.lease = copy.deepcopy(body)
        s.lease["metadata"]["resourceVersion"] = str(s.rv)
        s.calls.append((self.name, verb, "ok"))
        return copy.deepcopy(s.lease)

    async def create(self, path: str, body: JSON) -> JSON:
        await self._answer("POST")
        return self._store("POST", body, conflict=self.server.lease is not None)

    async def replace(self, path: str, body: JSON) -> JSON:
        await self._answer("PUT")
        live = self.server.lease
        assert live is not None
        rv = live["metadata"]["resourceVersion"]
        return self._store("PUT", body, conflict=body["metadata"].get("resourceVersion") != rv)


def elector(
    server: LeaseServer,
    identity: str,
    *,
    skew: float = 0.0,
    settings: LeaseSettings = SETTINGS,
) -> LeaderElector:
    """An elector whose wall clock is `skew` seconds off; its monotonic clock is the loop's."""
    loop = asyncio.get_running_loop()
    s = LeaseSettings(
        settings.namespace,
        settings.name,
        identity,
        settings.lease_duration,
        settings.renew_deadline,
        settings.retry_period,
    )
    return LeaderElector(server.client(identity), s, lambda: WALL0 + loop.time() + skew)


async def leading(server: LeaseServer, identity: str = "a") -> LeaderElector:
    """An elector that has just acquired the (free) lease."""
    e = elector(server, identity)
    assert await e.attempt()
    return e


async def advance(seconds: float) -> None:
    await asyncio.sleep(seconds)  # virtual: the clock jumps


# --------------------------------------------------------------------------- acquiring


def test_the_first_candidate_creates_the_lease_and_leads() -> None:
    async def main(loop: VirtualTimeLoop) -> None:
        server = LeaseServer()
        a = elector(server, "a")
        assert not a.may_write()
        assert await a.attempt()
        assert a.may_write()
        assert a.is_leader  # the same check
        assert server.holder() == "a"
        assert server.lease is not None
        assert server.lease["spec"]["leaseTransitions"] == 0
        assert server.lease["spec"]["leaseDurationSeconds"] == 4

    run_virtual(main)


@pytest.mark.parametrize(
    "skew",
    [
        pytest.param(0.0, id="same-wall-clock"),
        pytest.param(3600.0, id="standby-wall-clock-1h-ahead"),
        pytest.param(-3600.0, id="standby-wall-clock-1h-behind"),
    ],
)
def test_a_standby_takes_over_only_a_full_lease_duration_after_it_last_saw_a_change(
    skew: float,
) -> None:
    """Expiry is measured on the standby's own clock from when it SAW the record change; the
    holder's renewTime (written by another clock) is never compared with local time."""

    async def main(loop: VirtualTimeLoop) -> None:
        server = LeaseServer()
        await leading(server, "a")
        b = elector(server, "b", skew=skew)
        assert not await b.attempt()  # first sight of a's record: t = seen
        seen = loop.time()
        # a stops renewing (paused). Just before seen + duration, b still waits.
        await advance(SETTINGS.lease_duration - 0.01)
        assert not await b.attempt()
        assert server.holder() == "a"
        await advance(0.02)
        assert await b.attempt()
        assert loop.time() - seen >= SETTINGS.lease_duration
        assert server.holder() == "b"
        assert server.lease is not None
        assert server.lease["spec"]["leaseTransitions"] == 1

    run_virtual(main)


def test_a_lease_that_keeps_being_renewed_never_expires() -> None:
    async def main(loop: VirtualTimeLoop) -> None:
        server = LeaseServer()
        a, b = await leading(server), elector(server, "b", skew=7200.0)
        for _ in range(60):  # 30 s: many lease durations
            await advance(SETTINGS.retry_period)
            assert await a.attempt()
            assert not await b.attempt()
        assert server.writes("b") == 0
        assert server.holder() == "a"

    run_virtual(main)


def test_a_released_lease_is_taken_at_once() -> None:
    async def main(loop: VirtualTimeLoop) -> None:
        server = LeaseServer()
        a, b = await leading(server), elector(server, "b")
        assert not await b.attempt()
        await a.release()
        assert not a.is_leader
        assert server.holder() == ""
        assert await b.attempt()  # no lease duration to wait: nobody holds it

    run_virtual(main)


def test_two_candidates_racing_for_an_expired_lease_get_one_leader() -> None:
    async def main(loop: VirtualTimeLoop) -> None:
        server = LeaseServer()
        await leading(server, "a")
        b, c = elector(server, "b"), elector(server, "c")
        assert not await b.attempt()
        assert not await c.attempt()
        await advance(SETTINGS.lease_duration + 0.1)
        won = await asyncio.gather(b.attempt(), c.attempt())
        assert sorted(won) == [False, True]
        assert server.writes("b", "409") + server.writes("c", "409") == 1

    run_virtual(main)


# --------------------------------------------------------------------------- renewing


def test_a_renew_is_one_put_on_the_lease_last_written() -> None:
    async def main(loop: VirtualTimeLoop) -> None:
        server = LeaseServer()
        a = await leading(server)
        before = len(server.calls)
        for _ in range(5):
            await advance(SETTINGS.retry_period)
            assert await a.attempt()
        assert [v for _, v, _ in server.calls[before:]] == ["PUT"] * 5

    run_virtual(main)


def test_a_renew_that_never_answers_ends_at_the_renew_deadline() -> None:
    async def main(loop: VirtualTimeLoop) -> None:
        server = LeaseServer()
        renewed = loop.time()
        a = await leading(server)
        await advance(1.0)
        server.hang.add("a")
        assert not await a.attempt()
        # Cancelled exactly when the deadline from the last successful renew's start passed
        # (virtual time: no sleeping, no slack).
        assert loop.time() == pytest.approx(renewed + SETTINGS.renew_deadline)
        assert server.cancelled == [("a", "PUT")]
        assert not a.is_leader
        assert not a.may_write()

    run_virtual(main)


def test_a_leader_keeps_retrying_within_the_deadline_then_steps_down() -> None:
    class Failing(_Client):
        async def replace(self, path: str, body: JSON) -> JSON:
            raise KubeError("apiserver unavailable", 503)

        async def get_or_none(self, path: str) -> JSON | None:
            raise KubeError("apiserver unavailable", 503)

    async def main(loop: VirtualTimeLoop) -> None:
        server = LeaseServer()
        renewed = loop.time()
        a = await leading(server)
        a._kube = cast(KubeClient, Failing(server, "a"))
        failed = 0
        while loop.time() + SETTINGS.retry_period < renewed + SETTINGS.renew_deadline:
            await advance(SETTINGS.retry_period)
            # The round fails, but the last renew is recent enough: still the leader.
            assert await a.attempt()
            assert a.may_write()
            failed += 1
        assert failed == 5
        await advance(SETTINGS.retry_period)
        assert not await a.attempt()
        assert not a.may_write()

    run_virtual(main)


def test_a_conflict_on_renew_means_someone_else_holds_the_lease() -> None:
    async def main(loop: VirtualTimeLoop) -> None:
        server = LeaseServer()
        a = await leading(server)
        server.force(holderIdentity="intruder")
        await advance(SETTINGS.retry_period)
        assert not await a.attempt()  # PUT 409, GET: held by "intruder"
        assert not a.is_leader
        assert server.holder() == "intruder"

    run_virtual(main)


# --------------------------------------------------------------------------- the writer's check


def test_may_write_counts_from_the_start_of_the_last_successful_renew() -> None:
    class Slow(_Client):
        async def replace(self, path: str, body: JSON) -> JSON:
            await asyncio.sleep(1.0)  # a renew that takes 1 s to answer
            return await super().replace(path, body)

    async def main(loop: VirtualTimeLoop) -> None:
        server = LeaseServer()
        a = await leading(server)
        a._kube = cast(KubeClient, Slow(server, "a"))
        await advance(SETTINGS.retry_period)
        started = loop.time()
        assert await a.attempt()
        assert loop.time() == pytest.approx(started + 1.0)
        await advance(SETTINGS.renew_deadline - 1.0 - 0.01)
        assert a.may_write()
        assert a.write_window() == pytest.approx(0.01)  # what a write may wait for a connection
        await advance(0.02)
        assert not a.may_write()  # deadline counted from `started`, not from the answer
        assert a.write_window() == 0.0

    run_virtual(main)


def test_a_paused_leader_says_no_before_its_election_loop_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SIGSTOP in miniature: the leader's code does not run while the standby takes over; when
    it resumes, the first check refuses, and its next round finds the new holder without
    writing the Lease."""

    async def main(loop: VirtualTimeLoop) -> None:
        server = LeaseServer()
        a, b = await leading(server), elector(server, "b")
        assert not await b.attempt()
        changed = a.changed
        # a is paused: only b runs, until it holds the lease.
        while not await b.attempt():
            await advance(SETTINGS.retry_period)
        assert server.holder() == "b"
        a_writes = server.writes("a")
        # a resumes.
        with caplog.at_level(logging.INFO, logger="scaler.kube.lease"):
            assert not a.may_write()
        assert changed.is_set()
        assert any(r.getMessage() == "leadership lost" for r in caplog.records)
        assert not await a.attempt()
        assert not a.is_leader
        assert server.writes("a") == a_writes  # no PUT, not even a failed one
        assert server.holder() == "b"

    run_virtual(main)


def test_a_paused_leader_nobody_replaced_renews_again() -> None:
    async def main(loop: VirtualTimeLoop) -> None:
        server = LeaseServer()
        a = await leading(server)
        await advance(SETTINGS.renew_deadline + 0.5)  # paused past the deadline
        assert not a.may_write()
        assert await a.attempt()  # the record is still ours: a conditional PUT renews it
        assert a.may_write()
        assert server.holder() == "a"

    run_virtual(main)


def test_run_decides_on_its_first_round_and_renews_every_retry_period() -> None:
    async def main(loop: VirtualTimeLoop) -> None:
        server = LeaseServer()
        a, b = elector(server, "a"), elector(server, "b")
        tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
        await a.known.wait()
        await b.known.wait()
        await advance(60.0)
        assert a.is_leader != b.is_leader
        leader = "a" if a.is_leader else "b"
        assert server.holder() == leader
        assert server.writes(leader) == pytest.approx(60.0 / SETTINGS.retry_period, abs=2)
        assert server.writes("b" if leader == "a" else "a") <= 1  # at most a lost first race
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    run_virtual(main)


@pytest.mark.parametrize(
    ("duration", "deadline"),
    [
        pytest.param(4.0, 4.0, id="deadline-equals-duration"),
        pytest.param(4.0, 5.0, id="deadline-longer-than-duration"),
        pytest.param(4.0, 0.0, id="zero-deadline"),
    ],
)
def test_settings_without_a_safety_margin_are_refused(duration: float, deadline: float) -> None:
    server = LeaseServer()
    with pytest.raises(ValueError, match="renew deadline"):
        LeaderElector(
            server.client("a"), LeaseSettings("ns", "l", "a", duration, deadline, 0.5), lambda: 0.0
        )
