"""`tidal intercept [flags]`: the HTTP interceptor, until SIGTERM (then it drains) or SIGINT.

It watches HTTPScaledObjects (its routes), Services, ConfigMaps (placeholder pages named by
``placeholderConfig.contentConfigMap``; ``--no-placeholder-configmaps`` skips them), and the
backend sources chosen with ``--backends``: ``endpointslices`` (a cluster's published
endpoints), ``pods`` (ready Pods of the Service's selector: seen the moment they turn Ready, and
the source that works where EndpointSlices cannot hold the pods' addresses), or both (the
default). The proxy itself lives in `scalers.http` (loaded by name: the core never imports a
plugin); see docs/http.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scaler import logs
from scaler.kube.client import JSON, KubeClient
from scaler.kube.watch import Watcher

SUMMARY = "run the HTTP interceptor (holds requests while a workload scales from zero)"
log = logging.getLogger("tidal.intercept")

HSO_PATH = "/apis/http.keda.sh/v1alpha1"
SOURCES = ("endpointslices", "pods")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tidal intercept", description=SUMMARY)
    p.add_argument("--kubeconfig", default=None, help="kubeconfig (default: in-cluster)")
    p.add_argument("--namespace", default="", help="watch one namespace (default: all)")
    p.add_argument("--listen", default="0.0.0.0:8080", help="proxy address (host:port)")
    p.add_argument("--admin", default="0.0.0.0:9090", help="push stream, metrics, health")
    p.add_argument(
        "--backends",
        default="endpointslices,pods",
        help="backend sources, comma-separated: endpointslices, pods",
    )
    p.add_argument(
        "--placeholder-configmaps",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="watch ConfigMaps for placeholderConfig.contentConfigMap pages",
    )
    p.add_argument("--tls-cert", default="", help="serve the proxy port over TLS: certificate")
    p.add_argument("--tls-key", default="", help="... and its private key (PEM files)")
    p.add_argument(
        "--tls-reload-interval",
        type=float,
        default=10.0,
        help="seconds between checks of the TLS files for a renewed certificate",
    )
    p.add_argument("--max-held", type=int, default=20_000, help="held requests per target")
    p.add_argument("--retry-after", type=int, default=5, help="Retry-After of a 503 (s)")
    p.add_argument(
        "--connections-per-backend", type=int, default=256, help="keep-alive pool per backend"
    )
    p.add_argument(
        "--drain-timeout", type=float, default=60.0, help="SIGTERM: finish accepted requests (s)"
    )
    p.add_argument("--replica", default="", help="replica id in the push stream (default: host)")
    p.add_argument("--log-format", default="json", choices=("json", "text"))
    p.add_argument("--log-level", default="info")
    return p


def _path(namespace: str, collection: str, group: str = "/api/v1") -> str:
    if namespace:
        return f"{group}/namespaces/{namespace}/{collection}"
    return f"{group}/{collection}"


def _keep(obj: JSON) -> JSON:
    """The watch cache keeps identity only; the interceptor's index holds what routing reads."""
    meta = obj.get("metadata") or {}
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "resourceVersion": meta.get("resourceVersion"),
        }
    }


def watchers(
    kube: KubeClient,
    interceptor: Any,
    namespace: str,
    sources: set[str],
    config_maps: bool = True,
) -> list[Watcher]:
    found = [
        Watcher(
            kube,
            _path(namespace, "httpscaledobjects", HSO_PATH),
            interceptor.on_route,
            name="httpscaledobjects",
        ),
        Watcher(
            kube, _path(namespace, "services"), interceptor.on_service, name="services", keep=_keep
        ),
    ]
    if config_maps:
        found.append(
            Watcher(
                kube,
                _path(namespace, "configmaps"),
                interceptor.on_config_map,
                name="configmaps",
                keep=_keep,
            )
        )
    if "pods" in sources:
        found.append(
            Watcher(kube, _path(namespace, "pods"), interceptor.on_pod, name="pods", keep=_keep)
        )
    if "endpointslices" in sources:
        found.append(
            Watcher(
                kube,
                _path(namespace, "endpointslices", "/apis/discovery.k8s.io/v1"),
                interceptor.on_slice,
                name="endpointslices",
                keep=_keep,
            )
        )
    return found


async def run(args: argparse.Namespace, stop: asyncio.Event, drain: asyncio.Event) -> None:
    http = importlib.import_module("scalers.http.server")
    proxy_mod = importlib.import_module("scalers.http.proxy")
    settings = proxy_mod.ProxySettings(
        max_held=args.max_held,
        retry_after=args.retry_after,
        connections_per_backend=args.connections_per_backend,
    )
    replica = args.replica or f"{socket.gethostname()}-{os.getpid()}"
    tls = None
    if args.tls_cert:
        tls_mod = importlib.import_module("scalers.http.tls")
        tls = tls_mod.TlsFiles(Path(args.tls_cert), Path(args.tls_key), args.tls_reload_interval)
    interceptor = http.Interceptor(replica, settings, tls)
    sources = {s.strip() for s in args.backends.split(",") if s.strip()}
    kube = await KubeClient.auto(args.kubeconfig)
    tasks: list[asyncio.Task[None]] = []
    try:
        await interceptor.start(http.Listen.parse(args.listen), http.Listen.parse(args.admin))
        found = watchers(kube, interceptor, args.namespace, sources, args.placeholder_configmaps)
        tasks = [asyncio.create_task(w.run(), name=f"watch-{w.name}") for w in found]
        await asyncio.gather(*(w.synced.wait() for w in found))
        interceptor.ready.set()
        log.info("interceptor ready", extra={"routes": len(interceptor.routes), "replica": replica})
        stopping = asyncio.create_task(stop.wait())
        draining = asyncio.create_task(drain.wait())
        await asyncio.wait((stopping, draining), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        draining.cancel()
        if drain.is_set():
            await interceptor.drain(args.drain_timeout)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await interceptor.aclose()
        await kube.aclose()
    log.info("stopped")


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    if bool(args.tls_cert) != bool(args.tls_key):
        print("tidal intercept: --tls-cert and --tls-key go together")
        return 2
    bad = {s.strip() for s in args.backends.split(",") if s.strip()} - set(SOURCES)
    if bad:
        print(f"tidal intercept: unknown --backends source(s): {', '.join(sorted(bad))}")
        return 2
    logs.configure(args.log_format, args.log_level)

    async def serve() -> None:
        stop, drain = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, drain.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await run(args, stop, drain)

    asyncio.run(serve())
    return 0
