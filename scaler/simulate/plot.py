"""``--plot out.png``: the metric with its activation threshold and target (top), the replicas of
each variant (bottom), on the series' clock. matplotlib (the ``sim`` extra), Agg backend."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from scaler.simulate.series import Series
from scaler.simulate.timeline import Timeline, series_keys

INSTALL_HINT = "--plot needs matplotlib: pip install 'tidal[sim]'"


def _minutes(t: float, span: float) -> float:
    return t / 60 if span > 600 else t


def active_spans(tl: Timeline) -> list[tuple[float, float]]:
    """The stretches of time from an active poll to the next inactive one."""
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for poll in tl.polls:
        if poll.active and start is None:
            start = poll.t
        elif not poll.active and start is not None:
            spans.append((start, poll.t))
            start = None
    if start is not None:
        spans.append((start, tl.end))
    return spans


def plot(timelines: Sequence[Timeline], series: Series, out: Path, title: str = "") -> None:
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError(INSTALL_HINT) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = timelines[0]
    span = max(tl.end for tl in timelines)
    unit = "min" if span > 600 else "s"
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 5.5), sharex=True, dpi=90, gridspec_kw={"height_ratios": [1, 1.2]}
    )
    keys = series_keys(first.obj, series)
    shown: set[str] = set()
    for trig, key in zip(first.obj.triggers, keys, strict=True):
        points = series.points[key]
        if key not in shown:
            xs = [_minutes(p.t, span) for p in points] + [_minutes(span, span)]
            ys = [p.value if p.value is not None else float("nan") for p in points]
            ys.append(ys[-1])
            top.step(xs, ys, where="post", label=f"{trig.label} (series)", linewidth=1.6)
            shown.add(key)
            errors = [_minutes(p.t, span) for p in points if p.value is None]
            if errors:
                top.plot(errors, [0] * len(errors), "x", color="crimson", label="failed poll")
        top.axhline(
            trig.target,
            color="tab:green",
            linestyle="--",
            linewidth=1,
            label=f"target {trig.target:g} ({trig.target_type})",
        )
        top.axhline(
            trig.activation,
            color="tab:orange",
            linestyle=":",
            linewidth=1.2,
            label=f"activation > {trig.activation:g}",
        )
    for i, (start, stop) in enumerate(active_spans(first)):
        top.axvspan(
            _minutes(start, span),
            _minutes(stop, span),
            color="tab:red",
            alpha=0.07,
            label=None if i else "active (Tidal's polls)",
        )
    top.set_ylabel("metric")
    top.legend(loc="upper right", fontsize=8)
    top.grid(alpha=0.3)
    styles = ("-", "--", "-.", ":")
    for i, tl in enumerate(timelines):
        steps = tl.steps()
        bottom.step(
            [_minutes(t, span) for t, _ in steps],
            [n for _, n in steps],
            where="post",
            linewidth=max(2.6 - 0.5 * i, 1.0),  # the first drawn widest: overlaps stay visible
            linestyle=styles[i % len(styles)],
            alpha=0.9,
            label=tl.label or "replicas",
        )
    if len(timelines) == 1:
        for c in first.changes:
            bottom.plot(
                _minutes(c.t, span),
                c.after,
                "o" if c.who == "tidal" else ".",
                color="tab:red" if c.who == "tidal" else "tab:blue",
                markersize=5,
            )
        bottom.plot([], [], "o", color="tab:red", label="Tidal (0 <-> 1)")
        bottom.plot([], [], ".", color="tab:blue", label="HPA (1 <-> N)")
    bottom.set_ylabel("replicas")
    bottom.set_xlabel(f"time ({unit})")
    bottom.set_ylim(bottom=-0.3)
    bottom.grid(alpha=0.3)
    bottom.legend(loc="upper right", fontsize=8)
    fig.suptitle(title or "tidal simulate", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
