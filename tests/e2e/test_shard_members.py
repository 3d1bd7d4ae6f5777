"""The member Lease rules (scaler.kube.members) on the real API server, with the monotonic
clock driven by the test: the joining period, fencing when the view lapses, joining again
after a lapse, expiry observed on our clock, the Lease deleted on leaving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from scaler.kube.client import KubeClient
from scaler.kube.members import GC_AFTER, GROUP_LABEL, MemberLeases, MemberSettings
from scaler.kube.paths import namespaced

DURATION, DEADLINE, RETRY = 15.0, 10.0, 2.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    client = await KubeClient.from_kubeconfig(str(kubeconfig))
    try:
        yield client
    finally:
        await client.aclose()


async def rounds(clock: Clock, seconds: float, *members: MemberLeases) -> None:
    """Let `seconds` pass with a round of every member each retry period, as `run` does."""
    end = clock.now + seconds
    while clock.now < end:
        clock.now = min(end, clock.now + RETRY)
        for m in members:
            assert await m.attempt()


def member(kube: KubeClient, namespace: str, identity: str, clock: Clock) -> MemberLeases:
    settings = MemberSettings(
        namespace, "tidal-test", identity, f"127.0.0.1:{6444}", DURATION, DEADLINE, RETRY
    )
    return MemberLeases(kube, settings, monotonic=clock)


async def test_a_joiner_writes_only_after_a_lease_duration_and_stops_when_its_view_lapses(
    kube: KubeClient, namespace: str
) -> None:
    clock = Clock()
    a = member(kube, namespace, "Replica-A.one", clock)
    assert await a.attempt()
    assert a.ring.identities() == ("Replica-A.one",)
    assert a.owns(("shop", "orders"))
    assert not a.may_write(), "a joiner writes before the others can have seen it"
    await rounds(clock, DURATION - 0.1, a)
    assert not a.may_write()
    clock.now += 0.1
    assert a.may_write()
    clock.now += DEADLINE  # no complete round for the renew deadline: frozen, say
    assert not a.may_write()
    assert await a.attempt()
    assert not a.may_write(), "after a lapse the others may have dropped us: join again"
    await rounds(clock, DURATION, a)
    assert a.may_write()


async def test_others_drop_a_member_only_after_its_lease_went_unrenewed_on_their_clock(
    kube: KubeClient, namespace: str
) -> None:
    clock = Clock()
    a = member(kube, namespace, "a", clock)
    b = member(kube, namespace, "b", clock)
    assert await a.attempt()
    assert await b.attempt()
    assert await a.attempt()
    assert a.ring.identities() == ("a", "b")
    keys = [("ns", f"o{i}") for i in range(200)]
    assert {a.owns(k) for k in keys} == {True, False}
    # b stops renewing (killed): a keeps it until a lease duration passed on a's clock.
    await rounds(clock, DURATION - 1, a)
    assert a.ring.identities() == ("a", "b")
    await rounds(clock, 1, a)
    assert a.ring.identities() == ("a",)
    assert all(a.owns(k) for k in keys)


async def test_leaving_deletes_the_lease_and_stops_writes_first(
    kube: KubeClient, namespace: str
) -> None:
    clock = Clock()
    a = member(kube, namespace, "a", clock)
    assert await a.attempt()
    await rounds(clock, DURATION, a)
    assert a.may_write()
    path = namespaced("coordination.k8s.io", "v1", "leases", namespace)
    listed = await kube.get(path, labelSelector=f"{GROUP_LABEL}=tidal-test")
    assert [i["spec"]["holderIdentity"] for i in listed["items"]] == ["a"]
    await a.release()
    assert not a.may_write()
    listed = await kube.get(path, labelSelector=f"{GROUP_LABEL}=tidal-test")
    assert listed["items"] == []


async def test_dead_members_leases_are_collected_one_delete_at_a_time(
    kube: KubeClient, namespace: str
) -> None:
    """Members killed without leaving keep their Leases; a live member deletes each after
    GC_AFTER lease durations on its clock, one delete in flight at a time (they share the Lease
    connections with its renewals), so every one of them goes in later rounds."""
    clock = Clock()
    a = member(kube, namespace, "a", clock)
    dead = [member(kube, namespace, name, clock) for name in ("b", "c", "d")]
    for m in (a, *dead):
        assert await m.attempt()
    assert await a.attempt()
    assert a.ring.identities() == ("a", "b", "c", "d")
    await rounds(clock, GC_AFTER * DURATION + 4 * RETRY, a)  # b, c, d never renew again
    path = namespaced("coordination.k8s.io", "v1", "leases", namespace)
    holders: list[str] = []
    for _ in range(100):  # the last delete may still be in flight: up to 10 s of real time
        listed = await kube.get(path, labelSelector=f"{GROUP_LABEL}=tidal-test")
        holders = [i["spec"]["holderIdentity"] for i in listed["items"]]
        if holders == ["a"]:
            break
        clock.now += RETRY
        assert await a.attempt()
        await asyncio.sleep(0.1)
    assert holders == ["a"]
    assert a.ring.identities() == ("a",)
