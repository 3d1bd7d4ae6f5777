"""`tidal simulate` beyond the HPA model: series input, --compare variants, the timeline that
runs the daemon's decide() with the HPA model, and the command's outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scaler.commands import simulate as command
from scaler.errors import ConfigError
from scaler.simulate.objects import Overrides, load_object
from scaler.simulate.prometheus import series_from_answer
from scaler.simulate.series import ALL, SeriesError, parse_series
from scaler.simulate.timeline import Clock, Timeline, run
from scaler.simulate.variants import VariantError, parse_comparison, variants


def _so(*triggers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "worker", "namespace": "shop"},
        "spec": {"scaleTargetRef": {"name": "worker"}, "triggers": list(triggers), **spec},
    }


def _redis(**metadata: str) -> dict[str, Any]:
    return {
        "type": "redis",
        "metadata": {"address": "127.0.0.1:6379", "listName": "jobs", **metadata},
    }


FAST = {"pollingInterval": 5, "cooldownPeriod": 20}
NO_WINDOW = {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {
    "stabilizationWindowSeconds": 0,
    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 5}],
}}}}  # fmt: skip


def _run(manifest: dict[str, Any], csv: str, **clock: Any) -> Timeline:
    obj = load_object(manifest)
    return run(obj, parse_series(csv), Clock(hpa_sync_period=5, **clock))


def _changes(tl: Timeline) -> list[tuple[float, int, str]]:
    return [(c.t, c.after, c.who) for c in tl.changes]


# --------------------------------------------------------------------------- series


@pytest.mark.parametrize(
    ("text", "key", "points"),
    [
        pytest.param("t,value\n0,1\n10,2.5\n", ALL, [(0, 1), (10, 2.5)], id="csv-with-header"),
        pytest.param("10,2\n0,1\n", ALL, [(0, 1), (10, 2)], id="csv-sorted-by-time"),
        pytest.param("0,1,lag\n5,error,lag\n", "lag", [(0, 1), (5, None)], id="csv-trigger-error"),
        pytest.param("0,3\n5,\n", ALL, [(0, 3), (5, None)], id="csv-empty-is-a-failed-poll"),
        pytest.param(
            "2026-05-01T10:00:00Z,1\n2026-05-01T10:01:30Z,4\n",
            ALL,
            [(0, 1), (90, 4)],
            id="csv-rfc3339-relative-to-first",
        ),
        pytest.param('[[0, 1], {"t": 5, "value": null}]', ALL, [(0, 1), (5, None)], id="json-list"),
        pytest.param('{"lag": [[0, 2], [3, 4]]}', "lag", [(0, 2), (3, 4)], id="json-by-trigger"),
    ],
)
def test_series_parsing(text: str, key: str, points: list[tuple[float, float | None]]) -> None:
    series = parse_series(text)
    assert [(p.t, p.value) for p in series.points[key]] == points


def test_series_value_is_a_step_function() -> None:
    series = parse_series("0,1\n10,5\n")
    assert [series.value_at(ALL, t) for t in (0, 9.9, 10, 99)] == [1, 1, 5, 5]


def test_rfc3339_series_keeps_its_epoch() -> None:
    assert parse_series("2026-05-01T10:00:00Z,1\n").epoch == 1777629600.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "no points", id="empty"),
        pytest.param("0,abc\n", "not a number", id="bad-value"),
        pytest.param("soon,1\n", "neither seconds nor an RFC 3339", id="bad-time"),
        pytest.param("0,1\n2026-05-01T10:00:00Z,2\n", "mixing", id="mixed-times"),
        pytest.param("0,1,a,b\n", "columns", id="too-many-columns"),
    ],
)
def test_series_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(SeriesError, match=message):
        parse_series(text)


def test_prometheus_answer_must_be_one_series() -> None:
    one = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {}, "values": [[1777629600, "3"], [1777629615, "7"]]},
    ]}}  # fmt: skip
    series = series_from_answer(one, "q")
    assert [(p.t, p.value) for p in series.points[ALL]] == [(0, 3), (15, 7)]
    two = {"status": "success", "data": {"resultType": "matrix", "result": [{}, {}]}}
    with pytest.raises(SeriesError, match="aggregate"):
        series_from_answer(two, "q")


# --------------------------------------------------------------------------- variants


def test_compare_sets_spec_fields_and_combines() -> None:
    comparisons = [
        parse_comparison("cooldownPeriod=60,300"),
        parse_comparison("triggers[0].metadata.listLength=5"),
    ]
    out = variants(_so(_redis()), comparisons)
    assert [v.label for v in out] == [
        "cooldownPeriod=60 triggers[0].metadata.listLength=5",
        "cooldownPeriod=300 triggers[0].metadata.listLength=5",
    ]
    assert out[1].manifest["spec"]["cooldownPeriod"] == 300
    assert out[1].manifest["spec"]["triggers"][0]["metadata"]["listLength"] == 5


def test_compare_takes_json_objects_and_null_removes() -> None:
    behavior = '{"scaleDown": {"stabilizationWindowSeconds": 30}},null'
    comparison = parse_comparison(f"advanced.horizontalPodAutoscalerConfig.behavior={behavior}")
    assert comparison.values == ({"scaleDown": {"stabilizationWindowSeconds": 30}}, None)
    base = _so(_redis(), advanced=NO_WINDOW)
    with_window, removed = variants(base, [comparison])
    hpa_config = with_window.manifest["spec"]["advanced"]["horizontalPodAutoscalerConfig"]
    assert hpa_config["behavior"]["scaleDown"] == {"stabilizationWindowSeconds": 30}
    assert "behavior" not in removed.manifest["spec"]["advanced"]["horizontalPodAutoscalerConfig"]
    assert "behavior" in base["spec"]["advanced"]["horizontalPodAutoscalerConfig"]  # untouched


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("cooldownPeriod", id="no-values"),
        pytest.param("=1,2", id="no-field"),
        pytest.param("triggers[x]=1", id="bad-index"),
        pytest.param("cooldownPeriod=1,,2", id="empty-value"),
    ],
)
def test_compare_errors(text: str) -> None:
    with pytest.raises(VariantError):
        parse_comparison(text)


# --------------------------------------------------------------------------- the object


def test_targets_and_activation_come_from_the_scalers_own_parameters() -> None:
    obj = load_object(_so(_redis(listLength="10", activationListLength="3")))
    (trig,) = obj.triggers
    assert (trig.metric_name, trig.target, trig.activation) == ("s0-redis-jobs", 10.0, 3.0)
    assert (obj.hpa.min_replicas, obj.hpa.max_replicas) == (1, 100)


def test_trigger_needing_authentication_asks_for_target_and_activation() -> None:
    trigger = {"type": "redis", "metadata": {"listName": "jobs"}}  # address from an auth ref
    with pytest.raises(ConfigError, match="--target and --activation"):
        load_object(_so(trigger))
    obj = load_object(_so(trigger), Overrides(target=4, activation=1))
    assert (obj.triggers[0].target, obj.triggers[0].activation) == (4, 1)


def test_pause_scale_in_disables_the_hpa_scale_down() -> None:
    manifest = _so(_redis())
    manifest["metadata"]["annotations"] = {"autoscaling.keda.sh/paused-scale-in": "true"}
    behavior = load_object(manifest).hpa.behavior
    assert behavior is not None
    assert behavior.scale_down.select_policy == "Disabled"


# --------------------------------------------------------------------------- the timeline


def test_activation_is_strictly_above_the_threshold() -> None:
    manifest = _so(_redis(listLength="10", activationListLength="20"), **FAST)
    tl = _run(manifest, "0,0\n10,20\n30,21\n", until=40)
    assert _changes(tl)[:2] == [(30, 1, "tidal"), (30, 3, "hpa")]


def test_way_down_hpa_first_then_cooldown() -> None:
    manifest = _so(_redis(listLength="10"), advanced=NO_WINDOW, **FAST)
    tl = _run(manifest, "0,0\n10,50\n30,0\n", until=80)
    # Up by the behavior's default policy (4 pods per 15 s: 1 -> 5). Last active poll at 25 s;
    # the HPA reaches 1 at 30 s; 1 -> 0 at the first poll after 25 + 20 s.
    assert _changes(tl) == [
        (10, 1, "tidal"), (10, 5, "hpa"), (30, 1, "hpa"), (50, 0, "tidal"),
    ]  # fmt: skip
    assert tl.changes[-1].why.startswith("deactivate")


def test_failing_trigger_never_scales_to_zero() -> None:
    manifest = _so(_redis(listLength="10"), advanced=NO_WINDOW, **FAST)
    tl = _run(manifest, "0,0\n10,5\n20,error\n", until=200)
    assert _changes(tl) == [(10, 1, "tidal")]


def test_fallback_serves_target_times_replicas_to_the_hpa() -> None:
    manifest = _so(
        _redis(listLength="10"),
        advanced=NO_WINDOW,
        fallback={"failureThreshold": 2, "replicas": 6},
        **FAST,
    )
    tl = _run(manifest, "0,0\n10,5\n20,error\n", until=60)
    # Failures at 20, 25, 30: more than 2 from the third, so the HPA reads 10 x 6 = 60: 1 -> 5
    # (4 pods per 15 s), then 6 once that step is 15 s old. Never 0 while failing.
    assert _changes(tl) == [(10, 1, "tidal"), (30, 5, "hpa"), (45, 6, "hpa")]


def test_each_trigger_reads_its_own_series() -> None:
    manifest = _so(
        {**_redis(listLength="10"), "name": "jobs"},
        {"type": "metrics-api", "name": "api", "metadata": {
            "url": "http://127.0.0.1:1/m", "valueLocation": "v", "targetValue": "2",
        }},
        **FAST,
    )  # fmt: skip
    tl = _run(manifest, "0,0,jobs\n0,0,api\n10,10,jobs\n10,8,api\n", until=20)
    assert _changes(tl)[:2] == [(10, 1, "tidal"), (10, 4, "hpa")]  # max(1, 4), up-limit 4
    with pytest.raises(ConfigError, match="no series for trigger 1"):
        _run(manifest, "0,0,jobs\n")
    with pytest.raises(ConfigError, match="series for no trigger"):
        _run(manifest, "0,0\n0,1,nope\n")


def test_active_spans_run_from_an_active_poll_to_the_next_inactive_one() -> None:
    from scaler.simulate.plot import active_spans

    manifest = _so(_redis(listLength="10"), **FAST)
    tl = _run(manifest, "0,0\n10,5\n22,0\n40,3\n", until=50)
    assert active_spans(tl) == [(10, 25), (40, 50)]


# --------------------------------------------------------------------------- the command


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    manifest = tmp_path / "worker.json"
    manifest.write_text(json.dumps(_so(_redis(listLength="10"), **FAST)))
    series = tmp_path / "jobs.csv"
    series.write_text("t,value\n0,0\n30,45\n90,0\n")
    return manifest, series


def test_command_prints_the_table(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, series = files
    assert command.main([str(manifest), "--series", str(series)]) == 0
    out = capsys.readouterr().out
    assert "30s  0 -> 1    tidal  activate: s0-redis-jobs=45 > activation 0" in out
    assert "deactivate" in out


def test_command_json_with_variants(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, series = files
    argv = [str(manifest), "--series", str(series), "--compare", "cooldownPeriod=20,600"]
    assert command.main([*argv, "-o", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    short, long_ = body["timelines"]
    assert (short["label"], long_["label"]) == ("cooldownPeriod=20", "cooldownPeriod=600")
    assert short["changes"][-1]["after"] == 0
    assert short["summary"]["replica_seconds"] < long_["summary"]["replica_seconds"]


def test_command_plots(files: tuple[Path, Path], tmp_path: Path) -> None:
    manifest, series = files
    out = tmp_path / "sim.png"
    assert command.main([str(manifest), "--series", str(series), "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_reports_problems_with_exit_1(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, _ = files
    bad = manifest.parent / "bad.csv"
    bad.write_text("0,many\n")
    assert command.main([str(manifest), "--series", str(bad)]) == 1
    assert "tidal simulate: line 1: value 'many' is not a number" in capsys.readouterr().err


def test_the_docs_example_is_what_the_command_prints(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root / "docs" / "examples")
    argv = ["simulate-worker.yaml", "--series", "simulate-jobs.csv"]
    assert command.main([*argv, "--compare", "cooldownPeriod=30,300"]) == 0
    printed = capsys.readouterr().out

    def section(text: str) -> list[str]:
        lines = text.splitlines()
        start = lines.index("== cooldownPeriod=30")
        return lines[start : lines.index("", start)]

    assert section(printed) == section((root / "docs" / "simulate.md").read_text())
    assert printed.endswith(
        "cooldownPeriod=30       16   11       3495      15m00s\n"
        "cooldownPeriod=300      14   11       3945      19m00s\n"
    )


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        command.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "usage: tidal simulate" in text
    assert "--compare cooldownPeriod=30,300 --plot sim.png" in text
