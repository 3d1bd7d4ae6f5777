"""The `cron` trigger: active inside a recurring window of local wall-clock time.

Semantics of KEDA's cron scaler: the window is [start, end) in `timezone`; "now" is inside when
the next `end` comes no later than the next `start`. The value is `desiredReplicas` inside and 0
outside (KEDA's code reports 1 outside; see docs/scalers.md); the HPA target is 1, so the HPA
asks for exactly `desiredReplicas` while the window is open. Times come from the scheduler's
`now` (epoch seconds), never from the clock, and are matched against the wall clock of the IANA
zone, so windows keep their local bounds across daylight-saving changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from scaler.clients import ClientPool
from scaler.contract import MetricSpec, Sample, TriggerContext, metric_name
from scaler.params import Config, Param

_NAME_SUBSTITUTIONS = ((" ", ""), ("*", "x"), ("/", "Sl"), ("?", "Qm"), (",", "Cm"))


def cron_name_part(schedule: str) -> str:
    """KEDA's cron normalisation for metric names (plus ',' -> 'Cm')."""
    for old, new in _NAME_SUBSTITUTIONS:
        schedule = schedule.replace(old, new)
    return schedule


def _schedule_problem(key: str, schedule: str) -> str | None:
    if len(schedule.split()) != 5:
        return (
            f"error parsing {key} schedule: expected exactly 5 fields"
            f" (minute hour day-of-month month day-of-week), found {len(schedule.split())}"
        )
    if not croniter.is_valid(schedule):
        return f"error parsing {key} schedule: '{schedule}' is not a valid cron expression"
    return None


class CronScaler:
    PARAMS = (
        Param("timezone", sources=("metadata",), required=True, doc="IANA zone name"),
        Param("start", sources=("metadata",), required=True, doc="5-field cron expression"),
        Param("end", sources=("metadata",), required=True, doc="5-field cron expression"),
        Param("desiredReplicas", "int", sources=("metadata",), required=True, minimum=1),
    )
    SAMPLED = True

    @staticmethod
    def validate(config: Config, trigger: TriggerContext) -> Iterable[str]:
        problems: list[str] = []
        timezone = config.get_str("timezone")
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"unable to load timezone '{timezone}'")
        start, end = config.get_str("start"), config.get_str("end")
        for key, schedule in (("start", start), ("end", end)):
            problem = _schedule_problem(key, schedule)
            if problem:
                problems.append(problem)
        if start == end:
            problems.append("start and end can not have exactly same time input")
        return problems

    def __init__(self, config: Config, trigger: TriggerContext, clients: ClientPool) -> None:
        self._zone = ZoneInfo(config.get_str("timezone"))
        self._start = config.get_str("start")
        self._end = config.get_str("end")
        self._desired = config.get_int("desiredReplicas")
        detail = "-".join(
            (
                "cron",
                config.get_str("timezone"),
                cron_name_part(self._start),
                cron_name_part(self._end),
            )
        )
        self._spec = MetricSpec(metric_name(trigger.index, detail), 1.0, trigger.metric_type)

    def metric_spec(self) -> MetricSpec:
        return self._spec

    def is_active(self, now: float) -> bool:
        """True when `now` is inside [start, end): the next end comes before the next start.

        Schedules are matched against the local wall clock (a naive datetime), so each wall
        time happens once: a window keeps its wall-clock bounds when the offset changes, and
        the repeated hour after a fall-back does not restart it.
        """
        wall = datetime.fromtimestamp(now, self._zone).replace(tzinfo=None)
        next_start = croniter(self._start, wall).get_next(datetime)
        next_end = croniter(self._end, wall).get_next(datetime)
        return bool(next_end <= next_start)

    async def sample(self, now: float) -> Sample:
        active = self.is_active(now)
        return Sample(float(self._desired if active else 0), active, now)

    async def aclose(self) -> None:
        return None
