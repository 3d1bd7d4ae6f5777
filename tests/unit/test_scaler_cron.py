"""The cron scaler with an injected clock, across daylight-saving changes in two zones."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from scaler.clients import ClientPool
from scaler.contract import MetricSpec, TriggerContext
from scaler.errors import ConfigError
from scaler.registry import build_scaler
from scalers.cron import CronScaler, cron_name_part

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def _cron(tz: str, start: str, end: str, desired: str = "4", index: int = 0) -> CronScaler:
    metadata = {"timezone": tz, "start": start, "end": end, "desiredReplicas": desired}
    scaler = build_scaler(TriggerContext("ns", "so", index, "cron", "", metadata), ClientPool())
    assert isinstance(scaler, CronScaler)
    return scaler


def _at(zone: ZoneInfo, *fields: int, fold: int = 0) -> float:
    return datetime(*fields, tzinfo=zone, fold=fold).timestamp()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("now", "active"),
    [
        # Friday before the spring-forward weekend: CET, UTC+1.
        pytest.param(_at(BERLIN, 2026, 3, 27, 8, 59), False, id="fri-cet-before-start"),
        pytest.param(_at(BERLIN, 2026, 3, 27, 9, 0), True, id="fri-cet-at-start"),
        pytest.param(_at(BERLIN, 2026, 3, 27, 16, 59), True, id="fri-cet-before-end"),
        pytest.param(_at(BERLIN, 2026, 3, 27, 17, 0), False, id="fri-cet-at-end"),
        pytest.param(_at(BERLIN, 2026, 3, 28, 12, 0), False, id="saturday"),
        # Monday after: CEST, UTC+2. 07:30 UTC is 09:30 local (it was 08:30 local on Friday).
        pytest.param(_at(BERLIN, 2026, 3, 30, 8, 30), False, id="mon-cest-before-start"),
        pytest.param(
            datetime(2026, 3, 30, 7, 30, tzinfo=ZoneInfo("UTC")).timestamp(),
            True,
            id="mon-cest-0730-utc-is-inside",
        ),
        pytest.param(_at(BERLIN, 2026, 3, 30, 16, 59), True, id="mon-cest-before-end"),
        # Fall back (Oct 25): Monday after is CET again.
        pytest.param(_at(BERLIN, 2026, 10, 26, 9, 0), True, id="mon-after-fall-back-start"),
        pytest.param(
            datetime(2026, 10, 26, 7, 30, tzinfo=ZoneInfo("UTC")).timestamp(),
            False,
            id="mon-after-fall-back-0730-utc-is-before",
        ),
    ],
)
async def test_office_hours_follow_berlin_wall_clock(now: float, active: bool) -> None:
    scaler = _cron("Europe/Berlin", "0 9 * * 1-5", "0 17 * * 1-5", desired="4")
    sample = await scaler.sample(now)
    assert sample.active is active
    assert sample.value == (4.0 if active else 0.0)
    assert sample.observed_at == now


@pytest.mark.parametrize(
    ("now", "active"),
    [
        pytest.param(_at(NEW_YORK, 2026, 3, 7, 8, 59), False, id="sat-est-before"),
        pytest.param(_at(NEW_YORK, 2026, 3, 7, 9, 0), True, id="sat-est-start"),
        pytest.param(_at(NEW_YORK, 2026, 3, 8, 1, 59), False, id="sun-just-before-jump"),
        pytest.param(_at(NEW_YORK, 2026, 3, 8, 8, 59), False, id="sun-edt-before"),
        pytest.param(_at(NEW_YORK, 2026, 3, 8, 9, 0), True, id="sun-edt-start"),
        pytest.param(_at(NEW_YORK, 2026, 3, 8, 16, 59), True, id="sun-edt-before-end"),
        pytest.param(_at(NEW_YORK, 2026, 3, 8, 17, 0), False, id="sun-edt-end"),
    ],
)
async def test_new_york_spring_forward(now: float, active: bool) -> None:
    scaler = _cron("America/New_York", "0 9 * * *", "0 17 * * *")
    assert (await scaler.sample(now)).active is active


async def test_new_york_fall_back_window_lasts_its_real_length() -> None:
    """01:00-04:00 on the fall-back day spans four real hours (01:00-02:00 happens twice)."""
    scaler = _cron("America/New_York", "0 1 * * *", "0 4 * * *")
    first_0130 = _at(NEW_YORK, 2026, 11, 1, 1, 30, fold=0)  # EDT
    second_0130 = _at(NEW_YORK, 2026, 11, 1, 1, 30, fold=1)  # EST, one hour later
    assert second_0130 - first_0130 == 3600
    assert scaler.is_active(_at(NEW_YORK, 2026, 11, 1, 0, 59)) is False
    assert scaler.is_active(first_0130) is True
    assert scaler.is_active(second_0130) is True
    assert scaler.is_active(_at(NEW_YORK, 2026, 11, 1, 3, 59)) is True
    end = _at(NEW_YORK, 2026, 11, 1, 4, 0)
    assert end - _at(NEW_YORK, 2026, 11, 1, 1, 0) == 4 * 3600
    assert scaler.is_active(end) is False


async def test_berlin_window_ending_inside_the_skipped_hour() -> None:
    """02:30 does not exist on Mar 29 in Berlin: the window closes when the clock jumps."""
    scaler = _cron("Europe/Berlin", "0 1 * * *", "30 2 * * *")
    assert scaler.is_active(_at(BERLIN, 2026, 3, 29, 1, 59)) is True
    assert scaler.is_active(_at(BERLIN, 2026, 3, 29, 3, 5)) is False
    assert scaler.is_active(_at(BERLIN, 2026, 3, 30, 2, 29)) is True


@pytest.mark.parametrize(
    ("hour", "minute", "active"),
    [
        pytest.param(21, 59, False, id="before"),
        pytest.param(22, 0, True, id="start"),
        pytest.param(23, 30, True, id="before-midnight"),
        pytest.param(0, 30, True, id="after-midnight"),
        pytest.param(5, 59, True, id="before-end"),
        pytest.param(6, 0, False, id="end"),
        pytest.param(12, 0, False, id="midday"),
    ],
)
def test_window_across_midnight(hour: int, minute: int, active: bool) -> None:
    scaler = _cron("Europe/Berlin", "0 22 * * *", "0 6 * * *")
    assert scaler.is_active(_at(BERLIN, 2026, 7, 15, hour, minute)) is active


def test_metric_spec_name_and_target() -> None:
    scaler = _cron("America/New_York", "*/30 9-17 ? * 1,3", "0 18 * * *", index=2)
    assert scaler.metric_spec() == MetricSpec(
        "s2-cron-America-New_York-xSl309-17Qmx1Cm3-018xxx", 1.0, "AverageValue"
    )


@pytest.mark.parametrize(
    ("schedule", "part"),
    [
        pytest.param("0 9 * * 1-5", "09xx1-5", id="spaces-and-stars"),
        pytest.param("*/15 * * * *", "xSl15xxxx", id="slash"),
        pytest.param("0 0 ? * 1,2", "00Qmx1Cm2", id="question-and-comma"),
    ],
)
def test_cron_name_normalisation(schedule: str, part: str) -> None:
    assert cron_name_part(schedule) == part


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        pytest.param(
            {"timezone": "Mars/Olympus"},
            "unable to load timezone 'Mars/Olympus'",
            id="bad-timezone",
        ),
        pytest.param(
            {"start": "0 9 * *"},
            "error parsing start schedule: expected exactly 5 fields"
            " (minute hour day-of-month month day-of-week), found 4",
            id="four-fields",
        ),
        pytest.param(
            {"end": "0 0 17 * * *"},
            "error parsing end schedule: expected exactly 5 fields"
            " (minute hour day-of-month month day-of-week), found 6",
            id="six-fields",
        ),
        pytest.param(
            {"start": "99 9 * * *"},
            "error parsing start schedule: '99 9 * * *' is not a valid cron expression",
            id="minute-out-of-range",
        ),
        pytest.param(
            {"end": "0 9 * * *"},
            "start and end can not have exactly same time input",
            id="same-start-end",
        ),
        pytest.param(
            {"desiredReplicas": "0"},
            "error parsing 'desiredReplicas': invalid value '0' (must be at least 1)",
            id="zero-replicas",
        ),
        pytest.param(
            {"desiredReplicas": "two"},
            "error parsing 'desiredReplicas': invalid value 'two' (expected an integer)",
            id="replicas-not-int",
        ),
    ],
)
def test_invalid_cron_metadata(metadata: dict[str, str], problem: str) -> None:
    base = {"timezone": "UTC", "start": "0 9 * * *", "end": "0 17 * * *", "desiredReplicas": "1"}
    trigger = TriggerContext("ns", "so", 0, "cron", "", {**base, **metadata})
    with pytest.raises(ConfigError) as info:
        build_scaler(trigger, ClientPool())
    assert info.value.problems == (problem,)
