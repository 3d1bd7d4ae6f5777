"""The HPA Tidal derives from a ScaledObject, and drift detection against a live one."""

from __future__ import annotations

import copy

import pytest

from scaler.contract import MetricSpec
from scaler.kube.hpa import HpaRequest, desired_hpa, hpa_drifted
from scaler.kube.paths import GVKR

DEPLOY = GVKR("apps", "v1", "Deployment", "deployments")


def _req(**kw: object) -> HpaRequest:
    base: dict[str, object] = dict(
        name="keda-hpa-web",
        namespace="ns",
        so_name="web",
        so_uid="uid-1",
        target=DEPLOY,
        target_name="web",
        min_replicas=1,
        max_replicas=10,
        metrics=(MetricSpec("s0-redis-jobs", 5),),
    )
    base.update(kw)
    return HpaRequest(**base)  # type: ignore[arg-type]


def test_external_metric_selects_the_scaled_object() -> None:
    hpa = desired_hpa(_req())
    assert hpa["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert hpa["metadata"]["labels"]["scaledobject.keda.sh/name"] == "web"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
    }
    assert hpa["spec"]["metrics"] == [
        {
            "type": "External",
            "external": {
                "metric": {
                    "name": "s0-redis-jobs",
                    "selector": {"matchLabels": {"scaledobject.keda.sh/name": "web"}},
                },
                "target": {"type": "AverageValue", "averageValue": "5"},
            },
        }
    ]
    assert "behavior" not in hpa["spec"]


@pytest.mark.parametrize(
    ("spec", "target"),
    [
        pytest.param(
            MetricSpec("m", 2.5), {"type": "AverageValue", "averageValue": "2500m"}, id="avg-milli"
        ),
        pytest.param(MetricSpec("m", 7, "Value"), {"type": "Value", "value": "7"}, id="value"),
        # KEDA's GetMetricTargetMili rounds to milli precision; the apiserver spells it canonically.
        pytest.param(
            MetricSpec("m", 0.0015), {"type": "AverageValue", "averageValue": "2m"}, id="rounds-up"
        ),
        pytest.param(
            MetricSpec("m", 2.0007),
            {"type": "AverageValue", "averageValue": "2001m"},
            id="keeps-milli",
        ),
        pytest.param(
            MetricSpec("m", 2000), {"type": "AverageValue", "averageValue": "2k"}, id="canonical-k"
        ),
        pytest.param(
            MetricSpec("cpu", 60, "Utilization", kind="Resource"),
            {"type": "Utilization", "averageUtilization": 60},
            id="cpu-utilization",
        ),
    ],
)
def test_metric_targets(spec: MetricSpec, target: dict[str, object]) -> None:
    (entry,) = desired_hpa(_req(metrics=(spec,)))["spec"]["metrics"]
    body = entry.get("external") or entry.get("resource")
    assert body["target"] == target


def test_metrics_sorted_by_type_for_stable_output() -> None:
    specs = (MetricSpec("s1-redis-b", 1), MetricSpec("cpu", 50, "Utilization", kind="Resource"))
    types = [m["type"] for m in desired_hpa(_req(metrics=specs))["spec"]["metrics"]]
    assert types == ["External", "Resource"]


@pytest.mark.parametrize(
    ("scale_in", "scale_out", "expected"),
    [
        pytest.param(
            True, False, {"scaleDown": {"selectPolicy": "Disabled"}}, id="paused-scale-in"
        ),
        pytest.param(False, True, {"scaleUp": {"selectPolicy": "Disabled"}}, id="paused-scale-out"),
    ],
)
def test_pause_annotations_disable_hpa_direction(
    scale_in: bool, scale_out: bool, expected: dict[str, object]
) -> None:
    hpa = desired_hpa(_req(pause_scale_in=scale_in, pause_scale_out=scale_out))
    assert hpa["spec"]["behavior"] == expected


def test_behavior_passthrough_is_not_mutated() -> None:
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 30}}
    hpa = desired_hpa(_req(behavior=behavior, pause_scale_in=True))
    assert hpa["spec"]["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 30,
        "selectPolicy": "Disabled",
    }
    assert behavior == {"scaleDown": {"stabilizationWindowSeconds": 30}}


def test_drift_ignores_server_defaults_but_not_edits() -> None:
    desired = desired_hpa(_req())
    live = copy.deepcopy(desired)
    live["metadata"]["resourceVersion"] = "7"
    live["metadata"]["labels"]["extra"] = "added-by-someone"  # extra labels are tolerated
    live["status"] = {"currentReplicas": 1}
    assert not hpa_drifted(desired, live)
    edited = copy.deepcopy(live)
    edited["spec"]["maxReplicas"] = 3
    assert hpa_drifted(desired, edited)
    with_behavior = copy.deepcopy(live)
    with_behavior["spec"]["behavior"] = {"scaleUp": {"stabilizationWindowSeconds": 0}}
    assert hpa_drifted(desired, with_behavior)
