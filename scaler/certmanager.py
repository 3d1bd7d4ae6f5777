"""Tidal's own serving certificate, managed in a Secret that every replica shares (--cert-secret).

Each replica runs the same loop: read the Secret, ask `servingcert.plan` whether anything must
change (create, renew, rotate the CA, retire an old CA), write the change conditionally (a
create, or an update with the resourceVersion read; on a conflict re-read and decide again),
then load what the Secret holds: the serving certificate into the TLS listener (new handshakes
use it at once) and the CA bundle into the APIService's caBundle and the validating webhook
configuration's (--cert-webhook). It wakes up when the Secret changes (a watch), when the plan's
next deadline comes, and every `resync` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge

from metrics_api.pemfiles import PemDir
from metrics_api.tls import TlsManager
from scaler.errors import KubeError, TidalError
from scaler.kube.certstore import (
    StoredSecret,
    create_secret,
    read_secret,
    sync_ca_bundle,
    sync_webhook_ca_bundle,
    update_secret,
    watch_changes,
)
from scaler.kube.client import KubeClient
from scaler.kube.watch import Backoff
from scaler.servingcert import (
    CertMaterial,
    CertPolicy,
    expiries,
    next_check,
    plan,
    serving_fingerprint,
)

log = logging.getLogger(__name__)

CONFLICT_RETRIES = 5
RESYNC = 60.0  # seconds: re-read the Secret and re-check the caBundle even without events


@dataclass(frozen=True, slots=True)
class CertTarget:
    """Where the material lives and what it is for."""

    namespace: str
    name: str
    hosts: tuple[str, ...]
    apiservice: str = ""  # "" = no caBundle to keep in sync
    webhook: str = ""  # ValidatingWebhookConfiguration; "" = none to keep in sync

    @classmethod
    def parse(
        cls, secret: str, hosts: tuple[str, ...], apiservice: str, webhook: str = ""
    ) -> CertTarget:
        namespace, _, name = secret.partition("/")
        return cls(namespace, name, hosts, apiservice, webhook)

    @property
    def secret(self) -> str:
        return f"{self.namespace}/{self.name}"


class ManagedCertificate:
    """`await start()` once (the certificate files exist afterwards), then `run()` as a task."""

    def __init__(
        self,
        kube: KubeClient,
        target: CertTarget,
        policy: CertPolicy,
        pem_dir: PemDir,
        *,
        clock: Callable[[], float] = time.time,
        resync: float = RESYNC,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.kube = kube
        self.target = target
        self.policy = policy
        self.pem_dir = pem_dir
        self.clock = clock
        self.resync = resync
        self.tls: TlsManager | None = None
        # Called with the material whenever it changes (certificate or CA bundle), after the
        # listener got it: the peer listener and client follow it (scaler.peering).
        self.on_change: list[Callable[[CertMaterial], None]] = []
        self.material: CertMaterial | None = None
        self.files: tuple[Path, Path] = (Path(), Path())
        self.changes = 0  # writes this replica made to the Secret
        self._resource_version = ""
        self._wake = asyncio.Event()
        self.expiry = Gauge(
            "tidal_serving_certificate_expiry_timestamp_seconds",
            "When the metrics API's managed serving certificate and its CA expire (unix time)",
            ["certificate"],
            registry=registry,
        )

    async def start(self, timeout: float = 30.0) -> tuple[Path, Path]:
        """Reconciles until the Secret holds usable material (retrying apiserver errors for up
        to `timeout` s); returns the serving certificate and key files."""
        backoff = Backoff(base=0.5, cap=5.0)
        last = ""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        await self.reconcile()
                        return self.files
                    except KubeError as exc:
                        last = str(exc)
                        log.warning(
                            "serving certificate not ready",
                            extra={"secret": self.target.secret, "error": last},
                        )
                        await asyncio.sleep(backoff.next_delay())
        except TimeoutError:
            raise KubeError(
                f"no serving certificate from Secret {self.target.secret} after {timeout:.0f} s: "
                f"{last}"
            ) from None

    def attach(self, tls: TlsManager) -> None:
        """The listener to hot-reload from now on."""
        self.tls = tls

    async def run(self) -> None:
        watcher = asyncio.create_task(self._watch(), name="cert-secret-watch")
        backoff = Backoff(base=1.0, cap=30.0)
        try:
            while True:
                delay = self.resync
                if self.material is not None:
                    now = self.clock()
                    delay = min(delay, max(0.0, next_check(self.material, now, self.policy) - now))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                self._wake.clear()
                try:
                    await self.reconcile()
                    backoff.reset()
                except (KubeError, OSError, ssl.SSLError) as exc:
                    log.warning(
                        "serving certificate reconcile failed",
                        extra={"secret": self.target.secret, "error": str(exc)},
                    )
                    await asyncio.sleep(backoff.next_delay())
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def reconcile(self) -> CertMaterial:
        """One pass: decide, write (conflict-safe), load. Returns the material in use."""
        stored = await self._settle()
        material = CertMaterial.from_secret_data(stored.data)
        if material is None:  # unreachable after _settle, but keeps the types honest
            raise KubeError(f"Secret {self.target.secret} holds no certificate")
        self._load(material)
        await self._sync_bundle(material)
        return material

    async def _settle(self) -> StoredSecret:
        """Reads the Secret and writes what `plan` decides, until no change is due."""
        t = self.target
        for _ in range(CONFLICT_RETRIES):
            stored = await read_secret(self.kube, t.namespace, t.name)
            change = plan(
                CertMaterial.from_secret_data(stored.data), t.hosts, self.clock(), self.policy
            )
            if change is None:
                self._resource_version = stored.resource_version
                return stored
            data = {**stored.data, **change.material.secret_data()}
            if stored.exists:
                written = await update_secret(self.kube, stored, data)
            else:
                written = await create_secret(self.kube, t.namespace, t.name, data)
            if written is None:
                log.info(
                    "serving certificate changed by another replica",
                    extra={"secret": t.secret, "reason": change.reason},
                )
                continue
            self.changes += 1
            log.info(
                "serving certificate secret written",
                extra={"secret": t.secret, "reason": change.reason},
            )
        raise KubeError(f"Secret {t.secret}: still conflicting after {CONFLICT_RETRIES} tries")

    def _load(self, material: CertMaterial) -> None:
        old = self.material
        if old is not None and (old.cert, old.key) == (material.cert, material.key):
            self.material = material
            self.expiry.labels("ca").set(expiries(material)[1])
            if old != material:
                self._notify(material)
            return
        cert, key = self.pem_dir.write_pair(material.cert, material.key)
        if self.tls is not None:
            self.tls.use_files(cert, key)
        self.pem_dir.prune(keep=(cert, key))
        self.material, self.files = material, (cert, key)
        cert_end, ca_end = expiries(material)
        self.expiry.labels("serving").set(cert_end)
        self.expiry.labels("ca").set(ca_end)
        log.info(
            "serving certificate in use",
            extra={"secret": self.target.secret, "sha256": serving_fingerprint(material.cert)},
        )
        self._notify(material)

    def _notify(self, material: CertMaterial) -> None:
        for callback in self.on_change:
            try:
                callback(material)
            except (OSError, ssl.SSLError, ValueError) as exc:
                log.warning("certificate change not applied", extra={"error": str(exc)})

    async def _sync_bundle(self, material: CertMaterial) -> None:
        await self._sync_webhook_bundle(material)
        if not self.target.apiservice:
            return
        try:
            if await sync_ca_bundle(self.kube, self.target.apiservice, material.bundle):
                log.info(
                    "APIService caBundle updated",
                    extra={"apiservice": self.target.apiservice, "secret": self.target.secret},
                )
        except KubeError as exc:
            # 404: not created yet (the installer may apply it after Tidal starts); 409: changed
            # under us; 403: RBAC. Serving goes on; the next pass (<= RESYNC s) tries again.
            log.warning(
                "APIService caBundle not updated",
                extra={"apiservice": self.target.apiservice, "error": str(exc)},
            )

    async def _sync_webhook_bundle(self, material: CertMaterial) -> None:
        name = self.target.webhook
        if not name:
            return
        try:
            if await sync_webhook_ca_bundle(self.kube, name, material.bundle):
                log.info(
                    "webhook configuration caBundle updated",
                    extra={"webhook": name, "secret": self.target.secret},
                )
        except KubeError as exc:
            # As for the APIService: not there yet, changed under us, or RBAC. Next pass.
            log.warning(
                "webhook configuration caBundle not updated",
                extra={"webhook": name, "error": str(exc)},
            )

    async def _watch(self) -> None:
        t = self.target
        backoff = Backoff(base=1.0, cap=30.0)
        while True:
            try:
                async for _ in watch_changes(
                    self.kube, t.namespace, t.name, self._resource_version
                ):
                    self._wake.set()
                    backoff.reset()
            except (KubeError, TidalError) as exc:
                log.debug("serving certificate watch restarted", extra={"error": str(exc)})
                self._wake.set()  # re-read: the watch may have missed something
                await asyncio.sleep(backoff.next_delay())
