"""`tidal simulate SO.yaml --series FILE`: what Tidal and the HPA would do with a metric series."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from scaler.errors import ConfigError, TidalError
from scaler.simulate import render
from scaler.simulate.hpa_model import BehaviorError
from scaler.simulate.objects import Overrides, load_object
from scaler.simulate.series import Series, SeriesError, parse_series
from scaler.simulate.timeline import Clock, Timeline, run, settle_time
from scaler.simulate.variants import VariantError, parse_comparison, variants
from scaler.values import parse_duration

SUMMARY = "replay a metric series through decide() and a model of the HPA: the replica timeline"

DESCRIPTION = """\
Feed a metric time series through Tidal's own decide() (0 <-> 1: activation, cooldownPeriod,
fallback, pause annotations) and a model of the HPA controller (1 <-> N: tolerance,
stabilization windows, behavior policies, sync period, min/max) and print every replica change:
when, to what, who made it (tidal or hpa) and why."""

EPILOG = """\
series: CSV rows t,value[,trigger] (a header is optional) or JSON; t in seconds from 0 or
RFC 3339; a value "error" (or empty) is a failed poll; a trigger column names a trigger by name,
index, type or metric name (rows without one feed every trigger).

example (the files are in docs/examples):
  $ tidal simulate simulate-worker.yaml --series simulate-jobs.csv \\
        --compare cooldownPeriod=30,300 --plot sim.png
  == cooldownPeriod=30
       time  replicas  who    why
      2m00s  0 -> 1    tidal  activate: s0-redis-jobs=40 > activation 5
      2m00s  1 -> 4    hpa    s0-redis-jobs=40 / 10 per pod -> 4
      2m30s  4 -> 8    hpa    s0-redis-jobs=85 / 10 per pod -> 9; ScaleUpLimit: 4 pods per 15s
  ...
  variant            changes peak  replica-s last change
  cooldownPeriod=30       16   11       3495      15m00s
  cooldownPeriod=300      14   11       3945      19m00s

More in docs/simulate.md.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tidal simulate",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("manifest", help="the ScaledObject (YAML or JSON file; - for stdin)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--series", metavar="FILE", help="CSV t,value[,trigger] or JSON")
    src.add_argument(
        "--from-prometheus",
        nargs=2,
        metavar=("URL", "QUERY"),
        help="read the series with a Prometheus range query (one series: aggregate it)",
    )
    p.add_argument(
        "--since",
        default="6h",
        metavar="DURATION",
        help="with --from-prometheus: how far back (6h)",
    )
    p.add_argument(
        "--step", default="15s", metavar="DURATION", help="with --from-prometheus: the step (15s)"
    )
    p.add_argument(
        "--hpa-sync-period",
        default="15s",
        metavar="DURATION",
        help="kube-controller-manager's --horizontal-pod-autoscaler-sync-period (15s)",
    )
    p.add_argument(
        "--hpa-offset",
        default="0s",
        metavar="DURATION",
        help="when the HPA's first sync happens after the start",
    )
    p.add_argument(
        "--downscale-stabilization",
        default="5m",
        metavar="DURATION",
        help="kube-controller-manager's --horizontal-pod-autoscaler-downscale-stabilization (5m):"
        " the scale-down window of an HPA whose behavior does not set one",
    )
    p.add_argument(
        "--tolerance", type=float, default=0.1, metavar="X", help="the HPA's tolerance (0.1)"
    )
    p.add_argument(
        "--no-ready-pods",
        action="store_true",
        help="the cluster has no Ready pods (no kubelet): a Value target then sees 0 pods",
    )
    p.add_argument(
        "--replicas", type=int, default=0, metavar="N", help="the replica count at the start (0)"
    )
    p.add_argument(
        "--until",
        metavar="DURATION",
        help="simulate this long (default: the series' end plus time to settle)",
    )
    p.add_argument(
        "--target", type=float, metavar="X", help="every trigger's HPA target (default: metadata)"
    )
    p.add_argument(
        "--activation",
        type=float,
        metavar="X",
        help="every trigger's activation threshold (default: metadata)",
    )
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="FIELD=V1,V2",
        help="one variant per value of a field: cooldownPeriod=60,300, pollingInterval=5,30,"
        " advanced.horizontalPodAutoscalerConfig.behavior={...}; a path into spec, values are"
        " JSON; repeat the flag for every combination",
    )
    p.add_argument("--plot", metavar="OUT.png", help="draw the metric and replicas (matplotlib)")
    p.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="table or json (table)"
    )
    return p


def read_manifest(path: str) -> Mapping[str, Any]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    documents: list[Any]
    try:
        documents = [json.loads(text)]
    except ValueError:
        try:
            import yaml
        except ImportError as exc:
            raise ConfigError(
                f"{path}: YAML needs PyYAML (pip install 'tidal[sim]'), or give JSON"
            ) from exc
        try:
            documents = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not YAML: {exc}") from exc
    for doc in documents:
        if isinstance(doc, Mapping) and doc.get("kind") == "ScaledObject":
            return doc
    raise ConfigError(f"{path}: no ScaledObject in it")


def _seconds(text: str, flag: str) -> float:
    try:
        return parse_duration(text, bare_number_unit=1.0)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from exc


def load_series(args: argparse.Namespace) -> Series:
    if args.series:
        return parse_series(Path(args.series).read_text(), args.series)
    from scaler.simulate import prometheus

    url, query = args.from_prometheus
    return prometheus.fetch(
        url,
        query,
        since=_seconds(args.since, "--since"),
        step=_seconds(args.step, "--step"),
        end=time.time(),  # the query's window only; the simulation runs on the series' clock
    )


def simulate(args: argparse.Namespace) -> tuple[list[Timeline], Series]:
    manifest = read_manifest(args.manifest)
    series = load_series(args)
    overrides = Overrides(
        target=args.target,
        activation=args.activation,
        tolerance=args.tolerance,
        downscale_stabilization=_seconds(args.downscale_stabilization, "--downscale-stabilization"),
        ready_pods=not args.no_ready_pods,
    )
    clock = Clock(
        hpa_sync_period=_seconds(args.hpa_sync_period, "--hpa-sync-period"),
        hpa_offset=_seconds(args.hpa_offset, "--hpa-offset"),
        until=None if args.until is None else _seconds(args.until, "--until"),
        initial_replicas=args.replicas,
    )
    if clock.hpa_sync_period <= 0:
        raise ConfigError("--hpa-sync-period must be above 0")
    comparisons = [parse_comparison(c) for c in args.compare]
    objects = [
        (v.label, load_object(v.manifest, overrides)) for v in variants(manifest, comparisons)
    ]
    if clock.until is None:  # every variant runs as long as the slowest needs to settle
        clock = replace(clock, until=series.end + max(settle_time(obj) for _, obj in objects))
    return [run(obj, series, clock, label) for label, obj in objects], series


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    try:
        timelines, series = simulate(args)
        if args.plot:
            from scaler.simulate.plot import plot

            plot(timelines, series, Path(args.plot), title=f"tidal simulate {args.manifest}")
    except (TidalError, SeriesError, VariantError, BehaviorError, RuntimeError, OSError) as exc:
        problems = getattr(exc, "problems", None) or [str(exc)]
        for problem in problems:
            print(f"tidal simulate: {problem}", file=sys.stderr)
        return 1
    if args.output == "json":
        sync = _seconds(args.hpa_sync_period, "--hpa-sync-period")
        body = render.as_json(timelines, series.epoch, sync)
        print(json.dumps(body, indent=2))
    else:
        sys.stdout.write(render.table(timelines, series.epoch))
    return 0
