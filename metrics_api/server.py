"""Running the metrics API: an HTTPS site on the daemon's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from metrics_api.admission import Validator
from metrics_api.app import make_app
from metrics_api.authz import Authorizer
from metrics_api.pemfiles import PemDir
from metrics_api.source import MetricSource, PeerReader
from metrics_api.tls import ClientTrust, TlsManager, self_signed

log = logging.getLogger(__name__)


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return (host.strip("[]") or "0.0.0.0", int(port))


@contextlib.asynccontextmanager
async def serve_metrics_api(
    source: MetricSource,
    registry: CollectorRegistry,
    address: str,
    *,
    cert_file: str = "",
    key_file: str = "",
    trust: ClientTrust | None = None,
    dev_hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    pem_dir: PemDir | None = None,
    authorizer: Authorizer | None = None,
    validator: Validator | None = None,
    peers: PeerReader | None = None,
    reload_every: float = 10.0,
) -> AsyncIterator[tuple[TlsManager, int]]:
    """Serve until the context exits; yields the TLS manager (for CA and certificate updates)
    and the port. Without certificate files, a self-signed development certificate is written
    into `pem_dir` (a private directory in the temp dir when not given)."""
    own_dir: PemDir | None = None
    if cert_file and key_file:
        cert, key = Path(cert_file), Path(key_file)
    else:
        if pem_dir is None:
            pem_dir = own_dir = PemDir()
        cert, key = self_signed(list(dev_hosts), pem_dir)
        log.warning("serving the metrics API with a self-signed development certificate")
    tls = TlsManager(cert, key, trust)
    app = make_app(source, registry, tls, authorizer, validator, peers)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = split_address(address)
    site = web.TCPSite(runner, host, port, ssl_context=tls.outer, backlog=512)
    await site.start()
    bound = port
    if runner.addresses:
        bound = int(runner.addresses[0][1])
    log.info("metrics API listening", extra={"address": f"{host}:{bound}"})

    async def reloader() -> None:
        while True:
            await asyncio.sleep(reload_every)
            tls.reload_if_changed()

    task = asyncio.create_task(reloader(), name="metrics-api-cert-reload")
    try:
        yield tls, bound
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await runner.cleanup()
        if own_dir is not None:
            own_dir.close()
