"""`tidal status`: every ScaledObject the running daemon owns, from its debug endpoint."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from collections.abc import Sequence

from scaler.debug_client import (
    ADDRESS_HELP,
    DEFAULT_ADDRESS,
    JSON,
    EndpointError,
    clock,
    duration,
    fetch,
    number,
)

SUMMARY = "what the running daemon sees: every object, its triggers, next poll, last scale"
COLUMNS = ("NAMESPACE", "NAME", "PHASE", "ACTIVE", "REPLICAS", "TRIGGERS", "NEXT POLL", "FALLBACK")
CLEAR = "\x1b[H\x1b[2J"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tidal status",
        description=textwrap.fill(
            "A table of every ScaledObject the running Tidal daemon owns, read from its "
            "read-only debug endpoint (GET /debug/objects on the metrics port): whether it is "
            "active, each trigger's last value and its age, errors, the next poll, fallback, "
            "the last scale action Tidal wrote, and which replica leads. Values come from the "
            "daemon's memory, never from a new query to the event source."
        ),
        epilog=(
            "examples:\n"
            "  kubectl -n tidal-system port-forward deploy/tidal 8080 &\n"
            "  tidal status\n"
            "  tidal status -n shop --watch 2\n"
            "  tidal status -o json | jq '.objects[] | select(.active)'\n\n"
            "TRIGGERS shows metric=value (age) per trigger; ! marks a failing trigger (xN "
            "failures in a row; the last good value is held). Exit status: 0, or 1 when the "
            "endpoint cannot be read."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--address", default=DEFAULT_ADDRESS, help=ADDRESS_HELP)
    p.add_argument(
        "-n", "--namespace", default="", help="only the objects of this namespace (default: all)"
    )
    p.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default="table",
        help="table (default) or json: the endpoint's document as is",
    )
    p.add_argument(
        "-w",
        "--watch",
        nargs="?",
        type=float,
        const=2.0,
        default=None,
        metavar="SECONDS",
        help="redraw every SECONDS (default 2) until interrupted",
    )
    return p


def _trigger(t: JSON) -> str:
    name = t.get("metric") or t.get("type") or "?"
    if t.get("sampled") is False:
        return f"{name}=(HPA)"
    if t.get("error"):
        return f"{name}={number(t.get('value'))}!x{t.get('failures')}"
    if t.get("value") is None:
        return f"{name}=-"
    return f"{name}={number(t.get('value'))} ({duration(t.get('age'))})"


def _active(o: JSON) -> str:
    if o.get("phase") == "blocked":
        return "-"
    active = o.get("active")
    return "-" if active is None else ("yes" if active else "no")


def _next(o: JSON) -> str:
    if o.get("polling"):
        return "now"
    return duration(o.get("next_poll_in"))


def _fallback(o: JSON) -> str:
    fb = o.get("fallback")
    if not fb:
        return "-"
    return f"ACTIVE→{fb.get('active_replicas')}" if fb.get("active") else "armed"


def rows(doc: JSON) -> list[tuple[str, ...]]:
    out = []
    for o in doc.get("objects") or []:
        phase = str(o.get("phase"))
        if o.get("paused"):
            phase += ",paused"
        out.append(
            (
                str(o.get("namespace")),
                str(o.get("name")),
                phase,
                _active(o),
                "-" if o.get("replicas") is None else str(o.get("replicas")),
                " ".join(_trigger(t) for t in o.get("triggers") or []) or "-",
                _next(o),
                _fallback(o),
            )
        )
    return sorted(out)


def table(doc: JSON) -> str:
    body = [COLUMNS, *rows(doc)]
    widths = [max(len(r[i]) for r in body) for i in range(len(COLUMNS) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=False)) + "  " + r[-1]
        for r in body
    ]
    leader = doc.get("leader") or {}
    shards = leader.get("shards")
    if shards:
        members = shards.get("members") or []
        state = "writes them" if shards.get("may_write") else "does not write now (joining)"
        who = (
            f"{leader.get('identity')} is one of {len(members)} shard members "
            f"({', '.join(members)}); it owns the objects listed and {state}"
        )
    elif not leader.get("election"):
        who = f"{leader.get('identity')} (no leader election: it writes)"
    elif leader.get("is_leader"):
        who = f"{leader.get('identity')} is the leader (it writes)"
    else:
        who = (
            f"{leader.get('identity')} is a standby; leader: {leader.get('holder') or 'unknown'} "
            f"(values are this replica's; writes are the leader's)"
        )
    lines.append("")
    lines.append(f"{doc.get('count', 0)} objects at {clock(doc.get('now'))}; daemon {who}")
    failing = [o for o in doc.get("objects") or [] if o.get("phase") == "blocked"]
    for o in failing:
        lines.append(f"BLOCKED {o['namespace']}/{o['name']}: {o.get('error')}")
    scaled = [o for o in doc.get("objects") or [] if o.get("last_scale")]
    scaled.sort(key=lambda o: -float(o["last_scale"]["at"]))
    for o in scaled[:5]:
        s = o["last_scale"]
        lines.append(
            f"last scale {o['namespace']}/{o['name']}: {s['from']} → {s['to']} ({s['branch']}, "
            f"{s['outcome']}) {duration(s.get('age'))} ago"
        )
    return "\n".join(lines)


def show(args: argparse.Namespace) -> int:
    query = {"namespace": args.namespace} if args.namespace else {}
    try:
        doc = fetch(args.address, "/debug/objects", **query)
    except EndpointError as exc:
        print(f"tidal status: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(doc, indent=2))
    else:
        print(table(doc))
    return 0


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    if args.watch is None:
        return show(args)
    try:
        while True:
            if sys.stdout.isatty():
                sys.stdout.write(CLEAR)
            code = show(args)
            sys.stdout.flush()
            if args.watch <= 0:
                return code
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0
