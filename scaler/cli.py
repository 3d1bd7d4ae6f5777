"""`tidal` command line: `tidal run [flags]` starts the daemon; `tidal version`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metrics_api.server import serve_metrics_api
from metrics_api.source import MetricNotFound, MetricReading, MetricUnavailable
from metrics_api.tls import ClientTrust
from scaler import logs
from scaler.daemon import Daemon
from scaler.errors import KubeError
from scaler.health import serve_health
from scaler.kube.client import KubeClient
from scaler.kube.objects_io import fetch_requestheader_trust
from scaler.settings import Settings, build_parser, settings_from_args
from scaler.store import MetricUnavailableError, UnknownMetricError
from scaler.telemetry import Telemetry

VERSION = "0.1.0"
SHUTDOWN_GRACE = 5.0
log = logging.getLogger("tidal")


class StoreSource:
    """The metrics API's view of the daemon's store (never a live broker query)."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def read(self, namespace: str, metric: str, scaled_object: str) -> MetricReading:
        try:
            r = self._daemon.store.metric_value_for_hpa(
                namespace, metric, scaled_object, self._daemon.clock()
            )
        except UnknownMetricError as exc:
            raise MetricNotFound(str(exc)) from exc
        except MetricUnavailableError as exc:
            raise MetricUnavailable(str(exc)) from exc
        return MetricReading(r.value, r.observed_at)

    def ready(self) -> bool:
        return self._daemon.ready()


async def _trust_loop(daemon: Daemon, tls: Any, settings: Settings) -> None:
    """Keep the aggregator's client CA current (ConfigMap kube-system/extension-apiserver-...)."""
    while True:
        try:
            if settings.serve.client_ca_file:
                ca = await asyncio.to_thread(Path(settings.serve.client_ca_file).read_text)
                names = frozenset(settings.serve.allowed_names)
            else:
                found = await fetch_requestheader_trust(daemon.kube)
                if found is None:
                    raise KubeError("extension-apiserver-authentication has no requestheader CA")
                ca, published = found
                names = frozenset(settings.serve.allowed_names) or published
            tls.set_trust(ClientTrust(ca, names))
        except (KubeError, OSError) as exc:
            log.warning("client CA not loaded", extra={"error": str(exc)})
        await asyncio.sleep(30)


async def run_daemon(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    kube = await KubeClient.auto(settings.kubeconfig or None)
    telemetry = Telemetry(version=VERSION)
    daemon = Daemon(settings, kube, telemetry=telemetry, clock=time.time)
    stop = stop or asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        port = await stack.enter_async_context(
            serve_health(settings.serve.metrics_address, telemetry.registry, daemon.ready)
        )
        log.info("health and metrics listening", extra={"port": port})
        tasks = [asyncio.create_task(daemon.run(), name="daemon")]
        if settings.serve.api_address:
            tls, _ = await stack.enter_async_context(
                serve_metrics_api(
                    StoreSource(daemon),
                    telemetry.registry,
                    settings.serve.api_address,
                    cert_file=settings.serve.tls_cert_file,
                    key_file=settings.serve.tls_key_file,
                )
            )
            tasks.append(asyncio.create_task(_trust_loop(daemon, tls, settings), name="trust"))
        stopper = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is not stopper and t.exception() is not None:
                log.error("daemon task failed", exc_info=t.exception())
        log.info("shutting down")
        for t in tasks:
            t.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_GRACE):
                await asyncio.gather(*tasks, return_exceptions=True)
        stopper.cancel()
    await kube.aclose()


def _run(argv: Sequence[str]) -> int:
    settings = settings_from_args(argv)
    logs.configure(settings.log_format, settings.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_daemon(settings, stop=stop)

    asyncio.run(main())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(
            "usage: tidal run [flags]   (tidal run --help lists every flag)\n       tidal version"
        )
        return 0 if args else 2
    if args[0] == "version":
        print(f"tidal {VERSION}")
        return 0
    if args[0] == "run":
        if any(a in ("-h", "--help") for a in args[1:]):
            build_parser().print_help()
            return 0
        return _run(args[1:])
    print(f"tidal: unknown command {args[0]!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
