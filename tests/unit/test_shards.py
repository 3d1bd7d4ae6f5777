"""The member ring (scaler.shards) and the `--shards` flags: who owns what, and what moves."""

from __future__ import annotations

import pytest

from scaler.commands.run_flags import settings_from_args
from scaler.kube.members import lease_name
from scaler.shards import Member, Ring

KEYS = [(f"ns-{i % 7}", f"object-{i}") for i in range(3000)]


def ring(*names: str) -> Ring:
    return Ring.of(Member(n, f"127.0.0.1:{6444 + i}") for i, n in enumerate(names))


def owners(r: Ring) -> dict[tuple[str, str], str]:
    out = {}
    for key in KEYS:
        owner = r.owner(key)
        assert owner is not None
        out[key] = owner.identity
    return out


def test_each_member_owns_about_an_equal_share() -> None:
    counts: dict[str, int] = {}
    for identity in owners(ring("a", "b", "c")).values():
        counts[identity] = counts.get(identity, 0) + 1
    assert sorted(counts) == ["a", "b", "c"]
    assert all(800 <= n <= 1200 for n in counts.values()), counts


def test_the_answer_does_not_depend_on_the_order_members_were_seen() -> None:
    assert owners(ring("a", "b", "c")) == owners(ring("c", "a", "b"))


@pytest.mark.parametrize(
    ("before", "after", "gone_or_new"),
    [
        pytest.param(("a", "b", "c"), ("a", "b"), "c", id="a-member-leaves"),
        pytest.param(("a", "b"), ("a", "b", "c"), "c", id="a-member-joins"),
    ],
)
def test_a_membership_change_moves_only_the_changed_members_objects(
    before: tuple[str, ...], after: tuple[str, ...], gone_or_new: str
) -> None:
    old, new = owners(ring(*before)), owners(ring(*after))
    moved = {k for k in KEYS if old[k] != new[k]}
    assert moved, "nothing moved"
    # Every object that moved went to (or came from) the member that changed, never between
    # two members that both stay.
    assert all(gone_or_new in (old[k], new[k]) for k in moved)
    assert 0.2 * len(KEYS) < len(moved) < 0.5 * len(KEYS)


def test_no_member_no_owner() -> None:
    assert Ring().owner(("ns", "x")) is None


@pytest.mark.parametrize(
    "identity",
    [
        pytest.param("tidal-7d9c-abcde", id="pod-name"),
        pytest.param("Tidal.Replica_One", id="capitals-dots-underscore"),
        pytest.param("x" * 300, id="very-long"),
    ],
)
def test_member_lease_names_are_valid_object_names(identity: str) -> None:
    name = lease_name("tidal-leader", identity)
    assert len(name) <= 63
    assert name == name.lower()
    assert all(c.isalnum() or c == "-" for c in name)
    assert name != lease_name("tidal-leader", identity + "2")


def test_shards_auto_with_the_metrics_api_needs_the_managed_certificate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        settings_from_args(["--shards", "auto", "--api-address", "0.0.0.0:6443"], env={})
    assert "--shards auto with the metrics API on needs --cert-secret" in capsys.readouterr().err


def test_shards_auto_turns_leader_election_off_and_advertises_the_pod_ip() -> None:
    s = settings_from_args(
        ["--shards", "auto", "--api-address", ":6443", "--cert-secret", "tidal-system/tidal"],
        env={"POD_IP": "127.0.0.9"},
    )
    assert s.shards.enabled
    assert not s.leader.enabled
    assert s.shards.advertise == "127.0.0.9:6444"


def test_shards_off_by_default_keeps_leader_election() -> None:
    s = settings_from_args([], env={})
    assert not s.shards.enabled
    assert s.leader.enabled
