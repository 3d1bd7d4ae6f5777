"""The whole daemon process as one async context: kube client, daemon, health port, metrics API.

`tidal run`, the tests, the demo and the benchmarks all start Tidal through `Service`, so they run
the same composition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from metrics_api.authz import Authorizer, CachingAuthorizer
from metrics_api.pemfiles import PemDir
from metrics_api.server import serve_metrics_api
from metrics_api.source import MetricElsewhere, MetricNotFound, MetricReading, MetricUnavailable
from metrics_api.tls import ClientTrust, TlsManager
from scaler import __version__
from scaler.daemon import Daemon
from scaler.debug import DebugView, debug_routes
from scaler.errors import KubeError
from scaler.health import serve_health
from scaler.kube.access import SubjectAccessReviewer
from scaler.kube.client import KubeClient
from scaler.kube.objects_io import fetch_requestheader_trust
from scaler.settings import ServeSettings, Settings
from scaler.store import MetricUnavailableError, UnknownMetricError
from scaler.telemetry import Telemetry
from scaler.webhook import DaemonValidator

if TYPE_CHECKING:
    from scaler.certmanager import ManagedCertificate
    from scaler.peering import Peering

VERSION = __version__
SHUTDOWN_GRACE = 5.0
UNKNOWN_METRICS_REMEMBERED = 10_000  # (object, metric) pairs already logged as unknown
DEV_CERT_HOSTS = (
    "localhost",
    "127.0.0.1",
    "tidal-metrics-api.tidal-system.svc",
    "tidal-metrics.tidal-system.svc",
)
log = logging.getLogger(__name__)


class StoreSource:
    """The metrics API's view of the daemon's store (never a live broker query)."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self._unknown_logged: set[tuple[str, str, str]] = set()

    def read(self, namespace: str, metric: str, scaled_object: str) -> MetricReading:
        members = self._daemon.members
        if members is not None:
            owner = members.ring.owner((namespace, scaled_object))
            if owner is None:
                raise MetricUnavailable("no live replica owns the object (shard members unknown)")
            if owner.identity != members.identity:
                raise MetricElsewhere(owner.identity, owner.address)
        try:
            r = self._daemon.store.metric_value_for_hpa(
                namespace, metric, scaled_object, self._daemon.clock()
            )
        except UnknownMetricError as exc:
            self._log_unknown(namespace, metric, scaled_object)
            raise MetricNotFound(str(exc)) from exc
        except MetricUnavailableError as exc:
            raise MetricUnavailable(str(exc)) from exc
        return MetricReading(r.value, r.observed_at)

    def ready(self) -> bool:
        return self._daemon.ready()

    def _log_unknown(self, namespace: str, metric: str, scaled_object: str) -> None:
        """Once per (object, name): the HPA asks for a metric Tidal does not serve. Names the
        metrics the object does serve, so a naming mismatch is visible at once."""
        key = (namespace, scaled_object, metric)
        if key in self._unknown_logged:
            return
        if len(self._unknown_logged) >= UNKNOWN_METRICS_REMEMBERED:
            self._unknown_logged.clear()
        self._unknown_logged.add(key)
        known = self._daemon.store.metric_names(namespace, scaled_object)
        log.warning(
            "metric requested that the object does not serve",
            extra={
                "object": f"{namespace}/{scaled_object}",
                "metric": metric,
                "known": list(known) if known else "no such ScaledObject (or not built yet)",
            },
        )


class Service:
    """`async with Service(settings) as svc:` runs Tidal until the block exits."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.telemetry = Telemetry(version=VERSION)
        self.kube: KubeClient | None = None
        self.daemon: Daemon | None = None
        self.health_port = 0
        self.api_port = 0
        self.tls: TlsManager | None = None
        self.certificate: ManagedCertificate | None = None
        self.authorizer: CachingAuthorizer | None = None
        self.validator: DaemonValidator | None = None  # the admission webhook (--webhook)
        self.pem_dir: PemDir | None = None
        self.peering: Peering | None = None  # --shards auto
        self.peer_port = 0
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Service:
        s = self.settings
        self.kube = await KubeClient.auto(s.kubeconfig or None)
        self._stack.push_async_callback(self.kube.aclose)
        daemon = self.daemon = Daemon(s, self.kube, telemetry=self.telemetry, clock=self.clock)
        debug = DebugView(
            daemon.objects,
            daemon.store,
            leader=daemon.leader,
            identity=s.leader.identity,
            clock=self.clock,
            members=daemon.members,
        )
        self.health_port = await self._stack.enter_async_context(
            serve_health(
                s.serve.metrics_address,
                self.telemetry.registry,
                daemon.ready,
                debug_routes(debug),
            )
        )
        self._tasks.append(asyncio.create_task(daemon.run(), name="daemon"))
        if s.serve.api_address:
            await self._serve_api(s.serve, daemon)
        log.info(
            "tidal started",
            extra={"health_port": self.health_port, "api_port": self.api_port or None},
        )
        return self

    async def _serve_api(self, serve: ServeSettings, daemon: Daemon) -> None:
        """The metrics API: its certificate (managed, files or self-signed), its authorizer."""
        assert self.kube is not None
        pem_dir = self.pem_dir = PemDir(Path(serve.cert_dir) if serve.cert_dir else None)
        self._stack.callback(pem_dir.close)
        cert_file, key_file = serve.tls_cert_file, serve.tls_key_file
        if serve.cert_secret:
            # Imported here: issuing certificates loads cryptography (~13 MiB resident), which
            # a daemon given its certificate files (or serving no metrics API) never needs.
            from scaler.certmanager import CertTarget, ManagedCertificate
            from scaler.servingcert import CertPolicy, service_hosts

            # Every replica writes the Secret and the caBundle, leader or not: no write guard.
            self.certificate = ManagedCertificate(
                self.kube.unguarded(),
                CertTarget.parse(
                    serve.cert_secret,
                    service_hosts(serve.cert_service),
                    serve.cert_apiservice,
                    serve.cert_webhook,
                ),
                CertPolicy(serve.cert_validity, serve.cert_ca_validity, serve.cert_overlap),
                pem_dir,
                clock=self.clock,
                registry=self.telemetry.registry,
            )
            cert, key = await self.certificate.start()
            cert_file, key_file = str(cert), str(key)
        if self.settings.shards.enabled:
            assert self.certificate is not None  # settings refuse --shards auto without it
            from metrics_api.peer import serve_peers
            from scaler.peering import Peering

            self.peering = Peering(
                self.certificate,
                pem_dir,
                self.telemetry.registry,
                validity=serve.cert_validity,
                clock=self.clock,
            )
            self._stack.push_async_callback(self.peering.client.aclose)
            self.peer_port = await self._stack.enter_async_context(
                serve_peers(
                    StoreSource(daemon), self.settings.shards.peer_address, self.peering.tls
                )
            )
        if serve.webhook:
            self.validator = DaemonValidator(daemon, self.telemetry.registry)
        authorizer: Authorizer | None = None
        if serve.metrics_authorization == "delegated":
            authorizer = self.authorizer = CachingAuthorizer(
                SubjectAccessReviewer(self.kube.unguarded()),
                self.telemetry.registry,
                allow_ttl=serve.authorization_allow_ttl,
                deny_ttl=serve.authorization_deny_ttl,
            )
        tls, self.api_port = await self._stack.enter_async_context(
            serve_metrics_api(
                StoreSource(daemon),
                self.telemetry.registry,
                serve.api_address,
                cert_file=cert_file,
                key_file=key_file,
                dev_hosts=DEV_CERT_HOSTS,
                pem_dir=pem_dir,
                authorizer=authorizer,
                validator=self.validator,
                peers=None if self.peering is None else self.peering.client,
            )
        )
        self.tls = tls
        await self._load_trust()
        self._tasks.append(asyncio.create_task(self._trust_loop(), name="client-ca"))
        if self.certificate is not None:
            self.certificate.attach(tls)
            self._tasks.append(asyncio.create_task(self.certificate.run(), name="serving-cert"))

    async def wait(self, stop: asyncio.Event) -> None:
        """Until `stop` is set or the daemon task ends (it only ends by failing)."""
        stopper = asyncio.create_task(stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait(
                [*self._tasks, stopper], return_when=asyncio.FIRST_COMPLETED
            )
            for t in done:
                if t is not stopper and not t.cancelled() and t.exception() is not None:
                    log.error("tidal task failed", exc_info=t.exception())
        finally:
            stopper.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """SIGTERM path: stop polling, finish in-flight writes (bounded), release the lease."""
        for t in self._tasks:
            t.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_GRACE):
                await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stack.aclose()

    async def _load_trust(self) -> None:
        s = self.settings.serve
        assert self.kube is not None
        assert self.tls is not None
        try:
            if s.client_ca_file:
                ca = await asyncio.to_thread(Path(s.client_ca_file).read_text)
                names = frozenset(s.allowed_names)
            else:
                found = await fetch_requestheader_trust(self.kube)
                if found is None:
                    raise KubeError("extension-apiserver-authentication has no requestheader CA")
                ca, published = found
                names = frozenset(s.allowed_names) or published
            self.tls.set_trust(ClientTrust(ca, names))
        except (KubeError, OSError) as exc:
            log.warning("client CA not loaded", extra={"error": str(exc)})

    async def _trust_loop(self) -> None:
        while True:
            await asyncio.sleep(30)
            await self._load_trust()
