"""The timelines as a table (one section per variant, then a comparison) or as JSON."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scaler.simulate.timeline import Timeline, clock


@dataclass(frozen=True, slots=True)
class Summary:
    changes: int
    peak: int
    replica_seconds: float  # the area under the replica curve: what the variant costs
    last_change: float | None
    final: int


def summarize(tl: Timeline) -> Summary:
    steps = tl.steps()
    area = sum((t2 - t1) * n for (t1, n), (t2, _) in itertools.pairwise(steps))
    return Summary(
        changes=len(tl.changes),
        peak=max(n for _, n in steps),
        replica_seconds=area,
        last_change=tl.changes[-1].t if tl.changes else None,
        final=steps[-1][1],
    )


def _at(epoch: float | None, t: float) -> str | None:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch + t, dt.UTC).isoformat().replace("+00:00", "Z")


def table(timelines: Sequence[Timeline], epoch: float | None = None) -> str:
    lines: list[str] = []
    for tl in timelines:
        if tl.label:
            lines.append(f"== {tl.label}")
        head = f"{'time':>9}  {'replicas':<9} {'who':<6} why"
        if epoch is not None:
            head = f"{'at':<20} " + head
        lines.append(head)
        if not tl.changes:
            lines.append(f"{'':>9}  (no change: {tl.start_replicas} replicas throughout)")
        for c in tl.changes:
            row = f"{clock(c.t):>9}  {f'{c.before} -> {c.after}':<9} {c.who:<6} {c.why}"
            if epoch is not None:
                row = f"{_at(epoch, c.t):<20} " + row
            lines.append(row)
        lines.append("")
    if len(timelines) > 1:
        width = max(len("variant"), *(len(tl.label) for tl in timelines))
        lines.append(
            f"{'variant':<{width}} {'changes':>7} {'peak':>4} {'replica-s':>10} {'last change':>11}"
        )
        for tl in timelines:
            s = summarize(tl)
            last = clock(s.last_change) if s.last_change is not None else "-"
            lines.append(
                f"{tl.label:<{width}} {s.changes:>7} {s.peak:>4} {s.replica_seconds:>10.0f}"
                f" {last:>11}"
            )
    return "\n".join(lines).rstrip() + "\n"


def as_json(timelines: Sequence[Timeline], epoch: float | None, sync_period: float) -> Any:
    out = []
    for tl in timelines:
        s = summarize(tl)
        out.append(
            {
                "label": tl.label,
                "start_replicas": tl.start_replicas,
                "end": tl.end,
                "triggers": [
                    {
                        "name": t.label,
                        "metric": t.metric_name,
                        "target": t.target,
                        "target_type": t.target_type,
                        "activation": t.activation,
                    }
                    for t in tl.obj.triggers
                ],
                "changes": [
                    {
                        "t": c.t,
                        **({"at": _at(epoch, c.t)} if epoch is not None else {}),
                        "before": c.before,
                        "after": c.after,
                        "who": c.who,
                        "why": c.why,
                    }
                    for c in tl.changes
                ],
                "summary": {
                    "changes": s.changes,
                    "peak": s.peak,
                    "replica_seconds": round(s.replica_seconds, 3),
                    "final": s.final,
                },
            }
        )
    return {"hpa_sync_period": sync_period, "epoch": epoch, "timelines": out}
