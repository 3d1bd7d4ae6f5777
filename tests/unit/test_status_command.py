"""`tidal status`'s table, from rows the debug endpoint builds out of real runtimes."""

from __future__ import annotations

import dataclasses
import socket
from typing import Any

import pytest

from scaler.commands import status
from scaler.debug import object_json
from scaler.decide import TriggerView
from scaler.errors import ConfigError
from scaler.runtime import BuildFailure, ObjectRuntime
from scaler.store import MetricStore
from tests.unit.test_explain import NOW, err, ok, runtime, so_with


def stored(rt: ObjectRuntime) -> MetricStore:
    """The store as the poller leaves it after the views of the runtime's last decision."""
    store = MetricStore()
    store.register(rt.so.namespace, rt.so.name, rt.specs)
    views = () if rt.last_input is None else rt.last_input.triggers
    for v in views:
        if v.sample is not None:
            store.record_sample(rt.so.namespace, rt.so.name, v.metric_name, v.sample)
        for _ in range(v.consecutive_failures):
            store.record_error(rt.so.namespace, rt.so.name, v.metric_name, str(v.error), NOW)
    return store


def document(*runtimes: ObjectRuntime, leader: dict[str, Any] | None = None) -> dict[str, Any]:
    rows = [object_json(rt.so.key, rt, stored(rt), NOW + 3, NOW, NOW) for rt in runtimes]
    return {
        "now": NOW,
        "leader": leader or {"election": True, "identity": "tidal-0", "is_leader": True},
        "count": len(rows),
        "objects": rows,
    }


def line(table: str, name: str) -> str:
    return next(row for row in table.splitlines() if f" {name} " in row)


def test_a_failing_trigger_shows_its_held_value_and_streak() -> None:
    rt = runtime(so_with(fallback={"failureThreshold": 3, "replicas": 2}), 1, (err(),), None)
    row = line(status.table(document(rt)), "jobs")
    assert "s0-redis-jobs=3!x4" in row  # the last good value, held; 4 failures in a row
    assert row.split()[2:5] == ["running", "yes", "1"]  # fallback resolves to 2: active
    assert row.endswith("ACTIVE→2")


def test_a_cpu_trigger_is_read_by_the_hpa_and_fallback_is_armed() -> None:
    so = so_with(
        triggers=[
            {"type": "cpu", "metadata": {"value": "60"}},
            {"type": "redis", "metadata": {"listName": "jobs"}},
        ],
        fallback={"failureThreshold": 3, "replicas": 2},
        minReplicaCount=1,
    )
    rt = runtime(so, 1, (TriggerView("cpu", "cpu"), ok(0, "s1-redis-jobs")), None)
    row = line(status.table(document(rt)), "jobs")
    assert "cpu=(HPA) s1-redis-jobs=0 (1 s)" in row
    assert row.endswith("armed")


def test_paused_blocked_and_a_standby_daemon() -> None:
    paused = runtime(so_with({"autoscaling.keda.sh/paused": "true"}), 2, (ok(0),), None)
    blocked = ObjectRuntime(dataclasses.replace(so_with(), name="other"), 2)
    failure = BuildFailure(ConfigError("Secret 'ns/x' not found"), None, frozenset(), False)
    blocked.finish_build(failure, blocked.begin_build())
    doc = document(paused, blocked, leader={"election": True, "identity": "b", "is_leader": False})
    table = status.table(doc)
    assert line(table, "jobs").split()[2] == "running,paused"
    assert line(table, "other").split()[2:4] == ["blocked", "-"]
    assert "BLOCKED ns/other: Secret 'ns/x' not found" in table
    assert "b is a standby; leader: unknown" in table


@pytest.mark.parametrize(
    ("may_write", "says"),
    [
        pytest.param(True, "it owns the objects listed and writes them", id="member"),
        pytest.param(False, "does not write now (joining)", id="joining-member"),
    ],
)
def test_a_shard_member_names_the_ring(may_write: bool, says: str) -> None:
    shards = {"members": ["Tidal-A", "b", "c.d"], "owned": 1, "may_write": may_write}
    leader = {"election": False, "identity": "b", "is_leader": may_write, "shards": shards}
    rt = runtime(so_with(), 1, (ok(0),), None)
    table = status.table(document(rt, leader=leader))
    assert "b is one of 3 shard members (Tidal-A, b, c.d)" in table
    assert says in table


def test_an_unreachable_daemon_is_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert status.main(["--address", f"127.0.0.1:{port}", "--watch", "0"]) == 1
    assert "tidal status: cannot read http://127.0.0.1:" in capsys.readouterr().err
