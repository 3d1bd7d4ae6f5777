"""The HPA model (scaler/simulate/hpa_model.py) against hand-computed cases of the controller's
rules: tolerance, AverageValue / Value, stabilization windows, Pods / Percent policies,
selectPolicy, min / max, 0 replicas, unreadable metrics."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from scaler.simulate.hpa_model import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    Behavior,
    BehaviorError,
    HpaConfig,
    HpaController,
    MetricTarget,
    ScalingPolicy,
    ScalingRules,
    external_proposal,
    milli,
    parse_behavior,
)

AVG = MetricTarget("s0-redis-jobs", 10.0)
VAL = MetricTarget("s0-prometheus", 100.0, "Value")


def _hpa(
    behavior: Behavior | None = None,
    *,
    min_replicas: int = 1,
    max_replicas: int = 20,
    metrics: tuple[MetricTarget, ...] = (AVG,),
    downscale: float = 300.0,
    ready_pods: bool = True,
) -> HpaController:
    return HpaController(
        HpaConfig(min_replicas, max_replicas, metrics, behavior, 0.1, downscale, ready_pods)
    )


def _run(hpa: HpaController, current: int, steps: Sequence[tuple[float, float]]) -> list[int]:
    """Sync at each (time, value); returns the count after each sync."""
    out = []
    for now, value in steps:
        result = hpa.sync(now, current, {AVG.name: value})
        current = result.replicas if result.replicas is not None else current
        out.append(current)
    return out


@pytest.mark.parametrize(
    ("metric", "usage", "status", "ready", "want"),
    [
        pytest.param(AVG, 45, 2, 2, 5, id="average-ceil-45-over-10"),
        pytest.param(AVG, 21, 2, 2, 2, id="average-within-tolerance-keeps-2"),
        pytest.param(AVG, 22.1, 2, 2, 3, id="average-just-beyond-tolerance"),
        pytest.param(AVG, 0, 3, 3, 0, id="average-zero-usage-asks-0"),
        pytest.param(AVG, 0.0004, 3, 3, 0, id="average-below-a-milli-is-0"),
        pytest.param(VAL, 250, 2, 2, 5, id="value-ratio-times-ready-pods"),
        pytest.param(VAL, 105, 4, 4, 4, id="value-within-tolerance-keeps-current"),
        pytest.param(VAL, 250, 2, 0, 0, id="value-without-ready-pods-asks-0"),
    ],
)
def test_external_proposal(
    metric: MetricTarget, usage: float, status: int, ready: int, want: int
) -> None:
    assert external_proposal(metric, usage, status, ready, 0.1) == want


def test_milli_rounds_like_the_served_quantity() -> None:
    assert (milli(2.0007), milli(0.0015), milli(-3)) == (2001, 2, 0)


@pytest.mark.parametrize(
    ("current", "value", "want", "rule"),
    [
        pytest.param(0, 500, None, "ScalingDisabled", id="zero-replicas-does-nothing"),
        pytest.param(25, 10, 20, "above maxReplicas", id="above-max-to-max"),
        pytest.param(1, 500, 4, "ScaleUpLimit", id="legacy-up-limit-4-from-1"),
        pytest.param(5, 500, 10, "ScaleUpLimit", id="legacy-up-limit-double"),
        pytest.param(10, 500, 20, "TooManyReplicas", id="legacy-clamped-to-max"),
        pytest.param(3, 0, 1, "TooFewReplicas", id="legacy-down-to-min-no-window"),
    ],
)
def test_first_sync_without_behavior(
    current: int, value: float, want: int | None, rule: str
) -> None:
    result = _hpa(downscale=0).sync(100.0, current, {AVG.name: value})
    assert result.replicas == want
    assert rule in result.rule


def test_legacy_window_keeps_the_highest_recommendation() -> None:
    hpa = _hpa(downscale=60)
    # 8 replicas asked at 0 s; the value drops at 15 s: held at 8 until 60 s have passed.
    counts = _run(hpa, 8, [(0, 80), (15, 30), (30, 30), (60, 30), (61, 30)])
    assert counts == [8, 8, 8, 8, 3]


def test_unset_scale_down_window_with_a_behavior_is_the_controller_flag() -> None:
    behavior = parse_behavior({"scaleUp": {"stabilizationWindowSeconds": 0}})
    assert behavior is not None
    assert behavior.scale_down.stabilization_window is None
    hpa = _hpa(behavior, downscale=20)
    # The 6 asked at 0 s is in the window while it is younger than 20 s (strictly).
    assert _run(hpa, 6, [(0, 60), (10, 10), (19, 10), (20, 10)]) == [6, 6, 6, 1]


def test_scale_up_window_takes_the_lowest_recent_recommendation() -> None:
    behavior = Behavior(ScalingRules(30.0, "Max", DEFAULT_SCALE_UP.policies), DEFAULT_SCALE_DOWN)
    hpa = _hpa(behavior)
    # 20 at 0 s lifts only as far as the lowest recommendation of the last 30 s (2 at t=-…).
    counts = _run(hpa, 2, [(0, 20), (15, 80), (29, 80), (31, 80)])
    assert counts == [2, 2, 2, 6]


def _rules(select: str, *policies: ScalingPolicy, window: float = 0.0) -> ScalingRules:
    return ScalingRules(window, select, policies)  # type: ignore[arg-type]


PODS_2 = ScalingPolicy("Pods", 2, 60)
PERCENT_50 = ScalingPolicy("Percent", 50, 60)


@pytest.mark.parametrize(
    ("rules", "current", "value", "want"),
    [
        pytest.param(_rules("Max", PODS_2), 4, 200, 6, id="up-pods-2"),
        pytest.param(_rules("Max", PERCENT_50), 4, 200, 6, id="up-percent-50-of-4"),
        pytest.param(_rules("Max", PERCENT_50), 5, 200, 8, id="up-percent-rounds-up"),
        pytest.param(_rules("Max", PODS_2, PERCENT_50), 10, 200, 15, id="up-select-max"),
        pytest.param(_rules("Min", PODS_2, PERCENT_50), 10, 200, 12, id="up-select-min"),
        pytest.param(_rules("Disabled", PODS_2), 4, 200, 4, id="up-disabled"),
        pytest.param(_rules("Max", ScalingPolicy("Pods", 50, 60)), 4, 300, 20, id="up-to-max"),
    ],
)
def test_scale_up_policies(rules: ScalingRules, current: int, value: float, want: int) -> None:
    hpa = _hpa(Behavior(rules, DEFAULT_SCALE_DOWN))
    result = hpa.sync(0.0, current, {AVG.name: value})
    assert (result.replicas if result.replicas is not None else current) == want


@pytest.mark.parametrize(
    ("rules", "current", "value", "want"),
    [
        pytest.param(_rules("Max", PODS_2), 10, 0, 8, id="down-pods-2"),
        pytest.param(_rules("Max", PERCENT_50), 9, 0, 4, id="down-percent-truncates"),
        pytest.param(_rules("Max", PODS_2, PERCENT_50), 10, 0, 5, id="down-select-max-change"),
        pytest.param(_rules("Min", PODS_2, PERCENT_50), 10, 0, 8, id="down-select-min-change"),
        pytest.param(_rules("Disabled", PODS_2), 10, 0, 10, id="down-disabled"),
        pytest.param(_rules("Max", ScalingPolicy("Percent", 100, 15)), 10, 0, 2, id="down-min-2"),
    ],
)
def test_scale_down_policies(rules: ScalingRules, current: int, value: float, want: int) -> None:
    hpa = _hpa(Behavior(DEFAULT_SCALE_UP, rules), min_replicas=2)
    result = hpa.sync(0.0, current, {AVG.name: value})
    assert (result.replicas if result.replicas is not None else current) == want


def test_policy_period_counts_earlier_scale_ups() -> None:
    """Default scale-up (4 pods or 100 % per 15 s): from 1, a first step to 3; then the period
    still starts at 1 (max 5) until the first step is more than 15 s old."""
    hpa = _hpa(parse_behavior({"scaleDown": {"stabilizationWindowSeconds": 0}}))
    counts = _run(hpa, 1, [(3, 30), (12, 60), (17, 60), (18, 60)])
    assert counts == [3, 5, 5, 6]


def test_unreadable_metric_blocks_scale_in_but_not_scale_out() -> None:
    other = MetricTarget("s1-metric-api", 10.0)
    hpa = _hpa(metrics=(AVG, other), downscale=0)
    assert hpa.sync(0.0, 5, {AVG.name: 0, other.name: None}).replicas is None
    assert hpa.sync(1.0, 5, {AVG.name: 90, other.name: None}).replicas == 9
    assert hpa.sync(2.0, 9, {AVG.name: None, other.name: None}).replicas is None


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({"scaleUp": {"selectPolicy": "Sometimes"}}, id="bad-select-policy"),
        pytest.param({"scaleDown": {"stabilizationWindowSeconds": 4000}}, id="window-too-long"),
        pytest.param({"scaleUp": {"policies": [{"type": "Pods", "value": 0}]}}, id="bad-policy"),
    ],
)
def test_behavior_the_api_would_refuse(raw: dict[str, object]) -> None:
    with pytest.raises(BehaviorError):
        parse_behavior(raw)
