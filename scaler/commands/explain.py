"""`tidal explain NAMESPACE/NAME`: why the workload is at its replica count right now."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import textwrap
import urllib.parse
from collections.abc import Sequence

from scaler.debug_client import ADDRESS_HELP, DEFAULT_ADDRESS, JSON, EndpointError, fetch
from scaler.explain import render

SUMMARY = "why a workload is at its replica count: the decision, its inputs, in plain words"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tidal explain",
        description=textwrap.fill(
            "Why the workload of a ScaledObject is at its replica count right now, in plain "
            "words: the row of Tidal's decision table that produced the last decision and the "
            "inputs it was made from (each trigger's value, target and activation threshold, "
            "errors, lastActiveTime and the cooldown remaining, pause annotations, fallback), "
            "the HPA's current and desired replicas and conditions, and the last scale action. "
            "The decision comes from the running daemon's debug endpoint "
            "(GET /debug/objects/NAMESPACE/NAME on the metrics port); the HPA from the API."
        ),
        epilog=(
            "examples:\n"
            "  kubectl -n tidal-system port-forward deploy/tidal 8080 &\n"
            "  tidal explain shop/orders-worker\n"
            "  tidal explain shop/orders-worker --kubeconfig ~/.kube/staging -o json\n\n"
            "Exit status: 0; 1 when the endpoint cannot be read or the daemon runs no such "
            "object. Without API access the HPA lines say why they are missing."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("object", metavar="NAMESPACE/NAME", help="the ScaledObject")
    p.add_argument("--address", default=DEFAULT_ADDRESS, help=ADDRESS_HELP)
    p.add_argument(
        "--kubeconfig",
        default="",
        help="kubeconfig to read the HPA with (default: $KUBECONFIG, ~/.kube/config, in-cluster)",
    )
    p.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default="text",
        help="text (default) or json: the endpoint's document plus the HPA's status",
    )
    return p


async def read_hpa(kubeconfig: str, namespace: str, name: str) -> JSON | None:
    """The HPA as the API holds it (None: there is none)."""
    from scaler.kube.client import KubeClient
    from scaler.kube.paths import hpa

    kube = await KubeClient.auto(kubeconfig or None)
    try:
        return await kube.get_or_none(hpa(namespace, name))
    finally:
        await kube.aclose()


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    namespace, _, name = str(args.object).partition("/")
    if not namespace or not name or "/" in name:
        print("tidal explain: give the object as NAMESPACE/NAME", file=sys.stderr)
        return 2
    path = "/debug/objects/" + "/".join(urllib.parse.quote(p, safe="") for p in (namespace, name))
    try:
        obj = fetch(args.address, path)
    except EndpointError as exc:
        print(f"tidal explain: {exc}", file=sys.stderr)
        return 1
    hpa: JSON | None = None
    hpa_error: str | None = None
    try:
        hpa = asyncio.run(read_hpa(args.kubeconfig, namespace, str(obj["hpa"]["name"])))
    except Exception as exc:  # no kubeconfig, no access, API down: the HPA lines say why
        hpa_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if args.output == "json":
        hpa_status = None if hpa is None else hpa.get("status")
        print(json.dumps({**obj, "hpa_status": hpa_status, "hpa_error": hpa_error}, indent=2))
    else:
        print(render(obj, hpa=hpa, hpa_error=hpa_error))
    return 0
