"""A series from Prometheus' ``/api/v1/query_range`` (`--from-prometheus URL QUERY --since 6h`).

The query must return one series (wrap it in ``sum(...)`` or ``max(...)`` otherwise); a step
with no sample is a gap, not an error: the value in force carries on.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
import urllib.request
from typing import Any

from scaler.simulate.series import ALL, Row, Series, SeriesError, build


def query_range_url(base: str, query: str, start: float, end: float, step: float) -> str:
    params = urllib.parse.urlencode(
        {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}s"}
    )
    return f"{base.rstrip('/')}/api/v1/query_range?{params}"


def series_from_answer(body: Any, query: str) -> Series:
    """The one matrix series of a query_range answer, with absolute (epoch) times."""
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else None
        raise SeriesError(f"Prometheus refused {query!r}: {error or body!r}")
    data = body.get("data") or {}
    result = data.get("result") or []
    if data.get("resultType") != "matrix":
        raise SeriesError(f"{query!r} did not return a range vector")
    if len(result) != 1:
        raise SeriesError(
            f"{query!r} returned {len(result)} series; aggregate it to one (sum(...), max(...))"
        )
    values = result[0].get("values") or []
    rows: list[Row] = []
    for i, pair in enumerate(values):
        stamp, value = pair
        rows.append((_rfc3339(float(stamp)), value, ALL, f"sample {i}"))
    return build(rows)


def _rfc3339(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


def fetch(base: str, query: str, *, since: float, step: float, end: float) -> Series:
    """GET the range `end - since` .. `end` (epoch seconds) from Prometheus at `base`."""
    url = query_range_url(base, query, end - since, end, step)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
        except ValueError:
            raise SeriesError(f"Prometheus answered {exc.code} for {query!r}") from exc
    except (OSError, ValueError) as exc:
        raise SeriesError(f"cannot read {url}: {exc}") from exc
    return series_from_answer(body, query)
