"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager.

No kubelet and no scheduler: pods stay Pending, which is enough for the Deployment, ReplicaSet
and HPA controllers (an HPA with an External `AverageValue` target counts created pods, not Ready
ones). Aggregated API servers on loopback are reached through an `ExternalName` Service pointing
at `localhost` (see docs/design.md, "Loopback APIService"); nothing ever dials a ClusterIP.

Audit log: kube-apiserver records, at `Metadata` level and only at stage `ResponseComplete`, every
write (create, update, patch, delete) made by a client in the group `AUDITED_GROUP`, into
`kube/audit.log` (JSON lines, written synchronously as each request completes). Nothing else is
audited (no reads, no other client), so the rest of the suite pays nothing: a test opts in by
giving the processes it watches a user of their own (`user_kubeconfig(name)`) and reads the log
with `audit_events()`.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from localenv.certs import CertKey, ClusterCerts, issue, write_cluster_certs
from localenv.paths import k8s_bin
from localenv.process import ComponentError, ManagedProcess, free_port

HOST = "127.0.0.1"
FIELD_MANAGER = "tidal-localenv"
KCM_CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "job-controller",  # ScaledJobs' Jobs (scaler/jobs): it creates their pods, Pending without kwok
    "horizontal-pod-autoscaler-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
)
AUDITED_GROUP = "tidal:audited"  # writes by members of this group land in the audit log
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    # One event per request, once its response is complete.
    "omitStages": ["RequestReceived", "ResponseStarted", "Panic"],
    "rules": [
        {"level": "Metadata", "userGroups": [AUDITED_GROUP], "verbs": list(WRITE_VERBS)},
        {"level": "None"},
    ],
}


class KubeHTTPError(RuntimeError):
    """A non-2xx answer from kube-apiserver to one of the control plane's own requests."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} -> {status}: {body[:500]}")
        self.status = status


def _binary(name: str, log: Path) -> Path:
    path = k8s_bin(name)
    if not path.exists():
        raise ComponentError(name, log, f"binary not found at {path}; run `make env` to build it")
    return path


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=2, context=context) as response:
        return bool(response.status == 200)


def _progress(process: ManagedProcess) -> None:
    print(f"[localenv] {process.name} ready in {process.started_in:.1f} s (log: {process.log})")


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager for one run, with an admin kubeconfig."""

    def __init__(
        self,
        run_dir: Path,
        *,
        hpa_sync_period: str = "1s",
        downscale_stabilization: str = "0s",
        extra_apiserver_args: Sequence[str] = (),
        extra_kcm_args: Sequence[str] = (),
    ) -> None:
        self.dir = run_dir / "kube"
        self.pki = self.dir / "pki"
        self.hpa_sync_period = hpa_sync_period
        self.downscale_stabilization = downscale_stabilization
        self.extra_apiserver_args = tuple(extra_apiserver_args)
        self.extra_kcm_args = tuple(extra_kcm_args)
        self.etcd_port = free_port()
        self.apiserver_port = free_port()
        self.kcm_port = free_port()
        self.server = f"https://{HOST}:{self.apiserver_port}"
        self.kubeconfig = self.dir / "admin.kubeconfig"
        self.audit_log = self.dir / "audit.log"
        self.audit_policy = self.dir / "audit-policy.json"
        self.certs: ClusterCerts | None = None
        self.etcd: ManagedProcess | None = None
        self.apiserver: ManagedProcess | None = None
        self.kcm: ManagedProcess | None = None
        self._admin_context: ssl.SSLContext | None = None

    # -- paths clients need -------------------------------------------------------------------

    def _certs(self) -> ClusterCerts:
        if self.certs is None:
            raise RuntimeError("ControlPlane.start() has not run")
        return self.certs

    @property
    def ca_path(self) -> Path:
        """CA that signed the apiserver's serving cert and the admin client cert."""
        return self._certs().ca_crt

    @property
    def front_proxy_ca_path(self) -> Path:
        """CA that signed the aggregator's client cert (extension servers verify against it)."""
        return self._certs().front_proxy_ca_crt

    @property
    def admin_cert_paths(self) -> tuple[Path, Path]:
        certs = self._certs()
        return certs.admin_crt, certs.admin_key

    @property
    def start_times(self) -> dict[str, float]:
        """Seconds from launch to ready for each component that has started."""
        procs = (self.etcd, self.apiserver, self.kcm)
        return {p.name: p.started_in for p in procs if p is not None and p.started_in is not None}

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> ControlPlane:
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        binaries = {
            name: _binary(name, self.dir / f"{name}.log")
            for name in ("etcd", "kube-apiserver", "kube-controller-manager")
        }
        t0 = time.monotonic()
        self.certs = certs = write_cluster_certs(self.pki)
        print(f"[localenv] certificates written in {time.monotonic() - t0:.1f} s ({self.pki})")
        self._write_kubeconfig(certs)
        self.audit_policy.write_text(json.dumps(AUDIT_POLICY, indent=2) + "\n")
        self._admin_context = ssl.create_default_context(cafile=str(certs.ca_crt))
        self._admin_context.load_cert_chain(str(certs.admin_crt), str(certs.admin_key))

        self.etcd = self._etcd(binaries["etcd"])
        self.etcd.start()
        _progress(self.etcd)
        self.apiserver = self._apiserver(binaries["kube-apiserver"], certs)
        self.apiserver.start()
        _progress(self.apiserver)
        self.kcm = self._kcm(binaries["kube-controller-manager"], certs)
        self.kcm.start()
        _progress(self.kcm)

    def _etcd(self, binary: Path) -> ManagedProcess:
        client = f"http://{HOST}:{self.etcd_port}"
        peer = f"http://{HOST}:{free_port()}"
        argv = [
            str(binary),
            "--name=tidal",
            f"--data-dir={self.dir / 'etcd-data'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=tidal={peer}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]
        return ManagedProcess(
            "etcd", argv, self.dir, ready=lambda: _http_ok(f"{client}/health"), timeout=30
        )

    def _apiserver(self, binary: Path, certs: ClusterCerts) -> ManagedProcess:
        argv = [
            str(binary),
            f"--etcd-servers=http://{HOST}:{self.etcd_port}",
            f"--bind-address={HOST}",
            f"--secure-port={self.apiserver_port}",
            f"--advertise-address={HOST}",
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={certs.apiserver_crt}",
            f"--tls-private-key-file={certs.apiserver_key}",
            f"--client-ca-file={certs.ca_crt}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={certs.sa_pub}",
            f"--service-account-signing-key-file={certs.sa_key}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount",
            # As stricter clusters (OpenShift) do: an ownerReference with blockOwnerDeletion
            # needs `update` on the owner's finalizers (Tidal's HPAs; tests/deploy proves it).
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            f"--requestheader-client-ca-file={certs.front_proxy_ca_crt}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={certs.front_proxy_client_crt}",
            f"--proxy-client-key-file={certs.front_proxy_client_key}",
            # End open watches at once on SIGTERM; otherwise shutdown waits for them (~60 s).
            "--shutdown-watch-termination-grace-period=1s",
            f"--audit-policy-file={self.audit_policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",  # written as the request completes, not batched later
            *self.extra_apiserver_args,
        ]
        return ManagedProcess(
            "kube-apiserver",
            argv,
            self.dir,
            ready=lambda: _http_ok(f"{self.server}/readyz", self._admin_context),
            timeout=90,
        )

    def _kcm(self, binary: Path, certs: ClusterCerts) -> ManagedProcess:
        kubeconfig = self.kubeconfig
        argv = [
            str(binary),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={HOST}",
            f"--secure-port={self.kcm_port}",
            "--leader-elect=false",
            f"--controllers={','.join(KCM_CONTROLLERS)}",
            f"--service-account-private-key-file={certs.sa_key}",
            f"--root-ca-file={certs.ca_crt}",
            "--use-service-account-credentials=false",
            f"--horizontal-pod-autoscaler-sync-period={self.hpa_sync_period}",
            f"--horizontal-pod-autoscaler-downscale-stabilization={self.downscale_stabilization}",
            *self.extra_kcm_args,
        ]
        # KCM serves /healthz with a self-signed cert it makes itself: probe without verification.
        probe = ssl.create_default_context()
        probe.check_hostname = False
        probe.verify_mode = ssl.CERT_NONE
        return ManagedProcess(
            "kube-controller-manager",
            argv,
            self.dir,
            ready=lambda: _http_ok(f"https://{HOST}:{self.kcm_port}/healthz", probe),
            timeout=60,
        )

    def _write_kubeconfig(
        self,
        certs: ClusterCerts,
        path: Path | None = None,
        user: tuple[Path, Path] | None = None,
        token: str = "",
    ) -> None:
        # JSON is YAML: kubectl, client-go and kubernetes_asyncio all read this file.
        crt, key = user or (certs.admin_crt, certs.admin_key)
        credentials = (
            {"token": token} if token else {"client-certificate": str(crt), "client-key": str(key)}
        )
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "tidal-local",
                    "cluster": {"server": self.server, "certificate-authority": str(certs.ca_crt)},
                }
            ],
            "users": [{"name": "admin", "user": credentials}],
            "contexts": [
                {"name": "tidal-local", "context": {"cluster": "tidal-local", "user": "admin"}}
            ],
            "current-context": "tidal-local",
        }
        (path or self.kubeconfig).write_text(json.dumps(config, indent=2) + "\n")

    def user_kubeconfig(self, name: str, *, audited: bool = True) -> Path:
        """A kubeconfig for a user of its own, `name`, with admin rights (`system:masters`).

        The username tells this client's requests apart from every other one in the audit log;
        `audited` puts it in `AUDITED_GROUP`, whose writes the audit log records.
        """
        certs = self._certs()
        ca = CertKey(certs.ca_crt.read_bytes(), certs.ca_key.read_bytes())
        groups = ("system:masters", AUDITED_GROUP) if audited else ("system:masters",)
        crt, key = issue(ca, name, organizations=groups, client=True).write(
            self.pki, f"user-{name}"
        )
        path = self.dir / f"{name}.kubeconfig"
        self._write_kubeconfig(certs, path, (crt, key))
        return path

    def service_account_kubeconfig(
        self, namespace: str, name: str, *, expiration_seconds: int = 3600
    ) -> Path:
        """A kubeconfig that authenticates as ServiceAccount `namespace/name`: a bearer token
        from the TokenRequest API, as the kubelet would project into the account's pods."""
        review = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds},
            },
        )
        path = self.dir / f"sa-{namespace}-{name}.kubeconfig"
        self._write_kubeconfig(self._certs(), path, token=str(review["status"]["token"]))
        path.chmod(0o600)
        return path

    # -- the audit log ------------------------------------------------------------------------

    def audit_offset(self) -> int:
        """The audit log's current end: pass it to `audit_events` to read only what follows."""
        try:
            return self.audit_log.stat().st_size
        except FileNotFoundError:
            return 0

    def audit_events(self, since: int = 0, user: str | None = None) -> list[dict[str, Any]]:
        """Audit events (dicts, as kube-apiserver wrote them) from byte offset `since`, in the
        order their requests completed; only `user`'s when given. A partly written last line
        is left for the next call."""
        try:
            with self.audit_log.open("rb") as f:
                f.seek(since)
                data = f.read()
        except FileNotFoundError:
            return []
        events = []
        for line in data.split(b"\n")[:-1]:
            if not line.strip():
                continue
            event = json.loads(line)
            if user is None or event.get("user", {}).get("username") == user:
                events.append(event)
        return events

    def stop(self) -> None:
        """Stop KCM, then the apiserver, then etcd (each is a no-op when not running)."""
        for proc in (self.kcm, self.apiserver, self.etcd):
            if proc is not None:
                proc.stop()

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again on the same port against the same etcd."""
        if self.apiserver is None:
            raise RuntimeError("ControlPlane.start() has not run")
        self.apiserver.stop()
        self.apiserver.start()
        _progress(self.apiserver)

    # -- plain HTTPS requests as admin (synchronous on purpose) --------------------------------

    def request(self, method: str, path: str, body: Any = None, content_type: str = "") -> Any:
        """One request to kube-apiserver as admin; returns the decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type or "application/json"
        req = urllib.request.Request(self.server + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30, context=self._admin_context) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise KubeHTTPError(
                method, path, exc.code, exc.read().decode(errors="replace")
            ) from exc
        return json.loads(raw) if raw else None

    def apply(self, path: str, manifest: dict[str, Any]) -> Any:
        """Server-side apply `manifest` at `path` (the object's own URL): create or update."""
        query = f"?fieldManager={FIELD_MANAGER}&force=true"
        return self.request("PATCH", path + query, manifest, "application/apply-patch+yaml")

    def delete(self, path: str) -> bool:
        """DELETE `path`; False when it was already gone."""
        try:
            self.request("DELETE", path)
        except KubeHTTPError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # -- aggregated API servers ---------------------------------------------------------------

    def register_apiservice(
        self,
        *,
        port: int,
        ca_pem: bytes,
        group: str = "external.metrics.k8s.io",
        version: str = "v1beta1",
        service_name: str = "tidal-metrics",
        namespace: str = "tidal-system",
        timeout: float = 60.0,
    ) -> str:
        """Route `group/version` to an HTTPS server on 127.0.0.1:`port`; wait until Available.

        The server's cert must be signed by `ca_pem` and carry the SAN
        `<service_name>.<namespace>.svc`. Returns the APIService's name.
        """
        name = f"{version}.{group}"
        self.apply(
            f"/api/v1/namespaces/{namespace}",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        )
        self.apply(
            f"/api/v1/namespaces/{namespace}/services/{service_name}",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": service_name, "namespace": namespace},
                "spec": {"type": "ExternalName", "externalName": "localhost"},
            },
        )
        self.apply(
            f"/apis/apiregistration.k8s.io/v1/apiservices/{name}",
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": name},
                "spec": {
                    "group": group,
                    "version": version,
                    "service": {"name": service_name, "namespace": namespace, "port": port},
                    "caBundle": base64.b64encode(ca_pem).decode(),
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                },
            },
        )
        self.wait_apiservice_available(name, timeout)
        return name

    def apiservice_condition(self, name: str) -> dict[str, Any]:
        """The APIService's `Available` condition (empty when it has none yet)."""
        obj = self.request("GET", f"/apis/apiregistration.k8s.io/v1/apiservices/{name}")
        for condition in obj.get("status", {}).get("conditions", []):
            if condition.get("type") == "Available":
                return dict(condition)
        return {}

    def wait_apiservice_available(self, name: str, timeout: float = 60.0) -> None:
        t0 = time.monotonic()
        condition: dict[str, Any] = {}
        while time.monotonic() - t0 < timeout:
            condition = self.apiservice_condition(name)
            if condition.get("status") == "True":
                elapsed = time.monotonic() - t0
                print(f"[localenv] APIService {name} Available in {elapsed:.1f} s")
                return
            time.sleep(0.2)
        reason = f"{condition.get('reason', '-')}: {condition.get('message', 'no condition yet')}"
        log = self.apiserver.log if self.apiserver else self.dir / "kube-apiserver.log"
        raise ComponentError(
            f"APIService {name}", log, f"not Available after {timeout:.0f} s ({reason})"
        )

    def unregister_apiservice(
        self,
        *,
        group: str = "external.metrics.k8s.io",
        version: str = "v1beta1",
        service_name: str = "tidal-metrics",
        namespace: str = "tidal-system",
    ) -> None:
        """Delete the APIService (and its Service). Call it BEFORE the server behind it stops:
        a registered but unreachable APIService stalls discovery, namespace deletion and GC."""
        name = f"{version}.{group}"
        self.delete(f"/apis/apiregistration.k8s.io/v1/apiservices/{name}")
        self.delete(f"/api/v1/namespaces/{namespace}/services/{service_name}")
