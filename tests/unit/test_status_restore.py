"""What a process that loads an object assumes about its last activity (no restart ever
shortens a cooldown)."""

from __future__ import annotations

from typing import Any

import pytest

from scaler.decide import Decision
from scaler.status import decision_status, stored_last_active_time
from tests.unit.test_decide import so_with

NOW = 1_700_000_100.0
STORED = "2023-11-14T22:13:20Z"  # 1_700_000_000


def _active(status: str) -> dict[str, Any]:
    return {"type": "Active", "status": status, "reason": "", "message": ""}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param({}, None, id="never-active"),
        pytest.param({"lastActiveTime": STORED}, 1_700_000_000.0, id="stored-only"),
        pytest.param(
            {"lastActiveTime": STORED, "conditions": [_active("False")]},
            1_700_000_000.0,
            id="inactive-keeps-stored",
        ),
        pytest.param(
            {"lastActiveTime": STORED, "conditions": [_active("True")]},
            NOW,
            id="active-means-active-until-now",
        ),
        pytest.param({"conditions": [_active("True")]}, NOW, id="active-without-time"),
        pytest.param(
            {"lastActiveTime": "2023-11-14T22:15:00Z", "conditions": [_active("True")]},
            1_700_000_100.0,
            id="active-stored-equals-now",
        ),
    ],
)
def test_stored_last_active_time(status: dict[str, Any], expected: float | None) -> None:
    assert stored_last_active_time(status, NOW) == expected


def test_last_active_time_is_written_rounded_up() -> None:
    """Written with second precision: rounded up, so a cooldown counted from it is never
    shorter than the one counted in memory."""
    decision = Decision(None, False, frozenset(), last_active_time=1_700_000_000.2)
    status = decision_status(so_with(), None, [], decision, None)
    assert status["lastActiveTime"] == "2023-11-14T22:13:21Z"
