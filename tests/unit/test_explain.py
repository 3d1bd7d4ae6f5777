"""`tidal explain`'s wording: one sentence per row of the decision table, from real decisions.

Each row drives decide() with a DecisionInput, serialises the runtime the way the debug
endpoint does (scaler.debug) and renders it (scaler.explain); no I/O.
"""

from __future__ import annotations

import ast
import inspect
from typing import Any, ClassVar

import pytest

from scaler import decide as decide_module
from scaler.contract import MetricSpec, Sample
from scaler.debug import activation_threshold, detail_json, object_json
from scaler.debug_client import clock
from scaler.decide import DecisionInput, TriggerView, decide
from scaler.explain import ERROR_IS_NEVER_A_ZERO, EXPLANATIONS, STATES, headline, render
from scaler.kube.paths import GVKR
from scaler.objects import ScaledObject
from scaler.params import Param
from scaler.runtime import Build, ObjectRuntime, ScaleAction, TriggerRuntime
from scaler.store import MetricStore
from tests.unit.test_decide import NOW
from tests.unit.test_decide import so_with as decide_so_with

PASSWORD = {"password": "hunter2-secret"}
METRIC = "s0-redis-jobs"
OTHER = "s1-redis-other"


class ListScaler:
    """Declares what the real redis scaler declares for activation (no I/O is made)."""

    PARAMS: ClassVar[tuple[Param, ...]] = (
        Param("password", secret=True),
        Param("activationListLength", "int", default=0, minimum=0),
    )

    def metric_spec(self) -> MetricSpec:
        raise NotImplementedError

    async def sample(self, now: float) -> Sample:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


def so_with(annotations: dict[str, str] | None = None, **spec: Any) -> ScaledObject:
    """test_decide's object, with a password in its trigger metadata (it must never show)."""
    spec.setdefault("cooldownPeriod", 300)
    spec.setdefault("triggers", [{"type": "redis", "metadata": {"listName": "jobs", **PASSWORD}}])
    return decide_so_with(annotations, **spec)


def ok(value: float, metric: str = METRIC, *, fresh: bool = True) -> TriggerView:
    return TriggerView(metric, "redis", Sample(value, value > 0, NOW - 1), None, 0, fresh)


def err(metric: str = METRIC) -> TriggerView:
    return TriggerView(metric, "redis", Sample(3, True, NOW - 100), "connection refused", 4)


def never() -> TriggerView:
    return TriggerView(METRIC, "redis", None, None, 0)


def runtime(
    so: ScaledObject, current: int, views: tuple[TriggerView, ...], last_active: float | None
) -> ObjectRuntime:
    rt = ObjectRuntime(so, 1)
    triggers = tuple(
        TriggerRuntime(t, MetricSpec(v.metric_name, 2.0), None if t.is_resource else ListScaler())
        for t, v in zip(so.triggers, views, strict=False)
    )
    build = Build(GVKR("apps", "v1", "Deployment", "deployments"), triggers, frozenset(), 0.0)
    rt.finish_build(build, rt.begin_build())
    inp = DecisionInput(so, current, views, last_active, NOW)
    rt.last_input, rt.last_decision = inp, decide(inp)
    rt.last_active_time = rt.last_decision.last_active_time
    return rt


def explained(rt: ObjectRuntime) -> dict[str, Any]:
    obj = object_json(rt.so.key, rt, MetricStore(), None, NOW, 0.0)
    return {
        "now": NOW,
        "leader": {"identity": "tidal-0", "is_leader": True},
        **detail_json(obj, rt, NOW),
    }


TWO = [
    {"type": "redis", "metadata": {"listName": "jobs"}},
    {"type": "redis", "metadata": {"listName": "other"}},
]
PAUSE_IN = {"autoscaling.keda.sh/paused-scale-in": "true"}
PAUSE_OUT = {"autoscaling.keda.sh/paused-scale-out": "true"}

# (branch, object, current replicas, trigger views, lastActiveTime, what the sentence says)
ROWS = [
    pytest.param(
        "activate", so_with(), 0, (ok(3),), None,
        ["Scaling 0 → 1: activate", f"the trigger {METRIC} is active (3 > activation 0)"],
        id="activate",
    ),
    pytest.param(
        "scale-out-paused", so_with(PAUSE_OUT), 0, (ok(3),), None,
        ["Held at 0: scale-out paused", "paused-scale-out is set", "not raise it to 1"],
        id="scale-out-paused-active",
    ),
    pytest.param(
        "scale-out-paused", so_with(PAUSE_OUT, minReplicaCount=2), 0, (ok(0),), None,
        ["Held at 0: scale-out paused — below minReplicaCount 2"],
        id="scale-out-paused-below-min",
    ),
    pytest.param(
        "active-partial-error", so_with(triggers=TWO), 2, (ok(3), err(OTHER)), None,
        ["At 2, the HPA owns the count: active", f"{OTHER} is failing (4 in a row",
         "connection refused", "PartialTriggerError"],
        id="active-partial-error",
    ),
    pytest.param(
        "active", so_with(maxReplicaCount=10), 4, (ok(9),), None,
        ["At 4, the HPA owns the count: active", "(9 > activation 0)", "between 1 and 10"],
        id="active",
    ),
    pytest.param(
        "hold-error", so_with(), 1, (err(),), NOW - 4000,
        ["Held at 1: " + ERROR_IS_NEVER_A_ZERO, f"{METRIC} is failing (4 in a row",
         "last good value 3 is held"],
        id="hold-error",
    ),
    pytest.param(
        "hold-unknown", so_with(), 1, (never(),), None,
        ["Held at 1: holding", f"{METRIC} has no value yet", "an unknown is never a zero"],
        id="hold-unknown",
    ),
    pytest.param(
        "hpa-owns", so_with(), 3, (ok(0),), NOW - 4000,
        ["At 3, the HPA owns the count: inactive", "the HPA scales in first", "then 0"],
        id="hpa-owns",
    ),
    pytest.param(
        "scale-in-paused", so_with(PAUSE_IN), 1, (ok(0),), NOW - 4000,
        ["Held at 1: scale-in paused", "paused-scale-in is set", "not lower it to 0"],
        id="scale-in-paused",
    ),
    pytest.param(
        "hold-stale", so_with(), 1, (ok(0, fresh=False),), NOW - 4000,
        ["Held at 1: holding", "not sampled this round"],
        id="hold-stale",
    ),
    pytest.param(
        "deactivate", so_with(), 1, (ok(0),), NOW - 4000,
        ["Scaling 1 → 0: deactivate", "(0 ≤ activation 0)", "cooldownPeriod 300 s has elapsed"],
        id="deactivate",
    ),
    pytest.param(
        "cooldown", so_with(), 1, (ok(0),), NOW - 48,
        [
            f"Held at 1: cooldown — the trigger {METRIC} is inactive (0 ≤ activation 0) since "
            f"{clock(NOW - 48)}; cooldownPeriod 300 s ends in 4 min 12 s; then 1 → 0."
        ],
        id="cooldown",
    ),
    pytest.param(
        "to-min", so_with(minReplicaCount=2), 0, (ok(0),), None,
        ["Scaling 0 → 2: below minReplicaCount", "minReplicaCount 2"],
        id="to-min",
    ),
    pytest.param(
        "inactive", so_with(), 0, (ok(0),), NOW - 4000,
        ["At 0: inactive", "(0 ≤ activation 0)", "at its floor (0)"],
        id="inactive",
    ),
    pytest.param(
        "paused", so_with({"autoscaling.keda.sh/paused": "true"}), 1, (ok(5),), None,
        ["Held at 1: paused — autoscaling.keda.sh/paused is set", "HPA is deleted"],
        id="paused",
    ),
    pytest.param(
        "paused-replicas", so_with({"autoscaling.keda.sh/paused-replicas": "3"}), 1, (ok(5),),
        None,
        ["Scaling 1 → 3: paused at autoscaling.keda.sh/paused-replicas=3"],
        id="paused-replicas",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("branch", "so", "current", "views", "last_active", "says"), ROWS)
def test_each_branch_is_explained_in_plain_words(
    branch: str,
    so: ScaledObject,
    current: int,
    views: tuple[TriggerView, ...],
    last_active: float | None,
    says: list[str],
) -> None:
    rt = runtime(so, current, views, last_active)
    assert rt.last_decision is not None
    assert rt.last_decision.branch == branch
    text = headline(explained(rt), NOW)
    for phrase in says:
        assert phrase in text, f"{phrase!r} not in {text!r}"


def decide_branches() -> set[str]:
    """Every branch name decide() can return, read from its source: the first argument of each
    `result(...)` call and the `branch=` of each Decision(...)."""
    tree = ast.parse(inspect.getsource(decide_module))
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "result" and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.add(first.value)
        for kw in node.keywords:
            if kw.arg == "branch":
                found.update(
                    n.value
                    for n in ast.walk(kw.value)
                    if isinstance(n, ast.Constant) and isinstance(n.value, str)
                )
    return found


def test_every_branch_of_decide_has_an_explanation() -> None:
    branches = decide_branches()
    assert len(branches) >= 15  # the reader still finds decide()'s branches
    assert branches - set(EXPLANATIONS) == set()
    covered = {p.values[0] for p in ROWS}
    assert branches - covered == set(), "each branch has a wording row above"


def test_a_blocked_object_says_why() -> None:
    rt = ObjectRuntime(so_with(), 1)
    obj = object_json(rt.so.key, rt, MetricStore(), None, NOW, 0.0)
    obj.update(phase="blocked", error='secret "redis-auth" not found')
    text = headline({"now": NOW, **obj}, NOW)
    assert text.startswith("Not scaling: BLOCKED")
    assert 'secret "redis-auth" not found' in text
    assert set(STATES) == {"blocked", "undecided"}


def test_an_object_not_polled_yet_says_so() -> None:
    rt = ObjectRuntime(so_with(), 1)
    obj = object_json(rt.so.key, rt, MetricStore(), NOW + 5, NOW, NOW)
    text = headline({"now": NOW, **detail_json(obj, rt, NOW)}, NOW)
    assert text == (
        "Not decided yet: the object is unbuilt and has not been polled to a decision "
        "(next poll in 5 s)."
    )


def test_render_shows_inputs_hpa_and_last_scale_but_no_metadata() -> None:
    rt = runtime(so_with(), 1, (ok(0),), NOW - 48)
    rt.last_scale = ScaleAction(NOW - 100, 0, 1, "activate", "scaled")
    hpa = {
        "spec": {"minReplicas": 1, "maxReplicas": 100},
        "status": {
            "currentReplicas": 1,
            "desiredReplicas": 1,
            "conditions": [
                {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound"}
            ],
        },
    }
    text = render(explained(rt), hpa=hpa)
    assert "Held at 1: cooldown" in text
    assert f"{METRIC}: value 0" in text
    assert "target AverageValue 2, activation activationListLength 0" in text
    assert "HPA             keda-hpa-jobs: current 1, desired 1, min 1, max 100" in text
    assert "ScalingActive=True ValidMetricFound" in text
    assert "The HPA keda-hpa-jobs wants 1 (current 1, bounds 1..100)." in text
    assert "last scale      0 → 1 (activate, scaled)" in text
    assert "hunter2-secret" not in text
    assert "hunter2-secret" not in repr(explained(rt))


def test_an_hpa_that_cannot_compute_is_named() -> None:
    rt = runtime(so_with(), 3, (ok(9),), None)
    failing = {"type": "ScalingActive", "status": "False", "reason": "FailedGetExternalMetric"}
    hpa = {"spec": {}, "status": {"currentReplicas": 3, "conditions": [failing]}}
    text = render(explained(rt), hpa=hpa)
    assert "The HPA keda-hpa-jobs is not scaling (FailedGetExternalMetric): it keeps 3" in text


def test_render_without_api_access_says_why_the_hpa_is_missing() -> None:
    rt = runtime(so_with(), 0, (ok(0),), NOW - 4000)
    text = render(explained(rt), hpa_error="no kubeconfig")
    assert "HPA             keda-hpa-jobs: not read (no kubeconfig)" in text


@pytest.mark.parametrize(
    ("metadata", "shown"),
    [
        pytest.param(
            {"listName": "jobs"}, {"param": "activationListLength", "value": 0}, id="default"
        ),
        pytest.param(
            {"activationListLength": "7", **PASSWORD},
            {"param": "activationListLength", "value": 7},
            id="literal",
        ),
        pytest.param(
            {"activationListLengthFromEnv": "ACTIVATE_AT"},
            {"param": "activationListLength", "value": None, "from_env": True},
            id="from-env",
        ),
    ],
)
def test_the_activation_threshold_and_nothing_else_of_the_metadata(
    metadata: dict[str, str], shown: dict[str, Any]
) -> None:
    so = so_with(triggers=[{"type": "redis", "metadata": metadata}])
    t = TriggerRuntime(so.triggers[0], MetricSpec(METRIC, 2.0), ListScaler())
    assert activation_threshold(t) == shown
