"""Daemon settings: nested frozen dataclasses with the defaults `tidal run` starts with.

scaler/commands/run_flags.py fills them from flags and environment variables.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class WatchSettings:
    namespace: str = ""  # "" = all namespaces
    label_selector: str = ""
    cluster_object_namespace: str = "tidal-system"  # ClusterTriggerAuthentication secrets


@dataclass(frozen=True, slots=True)
class LeaderSettings:
    enabled: bool = True
    namespace: str = "tidal-system"
    name: str = "tidal-leader"
    identity: str = field(default_factory=socket.gethostname)
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


@dataclass(frozen=True, slots=True)
class ShardSettings:
    """`--shards auto`: every replica active, objects spread by member Leases (docs/sharding.md).

    The member Leases reuse the leader settings: namespace, `name` as the group, identity and
    the three durations."""

    mode: str = "off"  # "off" (leader election decides the one writer) | "auto"
    peer_address: str = "0.0.0.0:6444"  # HTTPS listener that answers peers' metric reads
    advertise: str = ""  # HOST:PORT peers dial; "" = $POD_IP (else the hostname) + peer port

    @property
    def enabled(self) -> bool:
        return self.mode == "auto"


@dataclass(frozen=True, slots=True)
class PollSettings:
    http_timeout: float = 3.0  # seconds (KEDA_HTTP_DEFAULT_TIMEOUT is in ms)
    max_concurrent: int = 200  # objects polled at once
    failing_log_every: int = 10  # repeat a failing trigger's warning every N polls
    push_recheck: float = 60.0  # seconds between re-checks of a source that could not push
    # tidal intercept's admin addresses (host:port): when set, HTTPScaledObjects are reconciled
    # into ScaledObjects whose http triggers stream from them (scaler.http_objects).
    http_interceptors: tuple[str, ...] = ()
    # Endpoint addresses rewritten before they are dialled (scaler.kube.endpoints): FROM -> TO.
    endpoint_address_map: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ServeSettings:
    metrics_address: str = "0.0.0.0:8080"  # Prometheus /metrics, /healthz, /readyz
    api_address: str = ""  # external.metrics.k8s.io HTTPS, "" = disabled; e.g. 0.0.0.0:6443
    tls_cert_file: str = ""
    tls_key_file: str = ""
    client_ca_file: str = ""  # requestheader CA; "" = read kube-system ConfigMap
    allowed_names: tuple[str, ...] = ()
    # Managed serving certificate (docs/security.md): "" = not managed (files or self-signed).
    cert_secret: str = ""  # NAMESPACE/NAME of the Secret holding CA + serving cert
    cert_apiservice: str = "v1beta1.external.metrics.k8s.io"  # caBundle kept in sync; "" = none
    cert_service: str = "tidal-system/tidal-metrics-api"  # NAMESPACE/NAME: the cert's DNS names
    cert_dir: str = ""  # where run-time PEM files go; "" = the temp dir ($TMPDIR)
    cert_validity: float = 365 * 86400.0  # serving certificate lifetime, seconds
    cert_ca_validity: float = 5 * 365 * 86400.0  # managed CA lifetime, seconds
    cert_overlap: float = 600.0  # a new CA is trusted this long before it signs the cert
    metrics_authorization: str = "delegated"  # "delegated" (SubjectAccessReview) | "none"
    authorization_allow_ttl: float = 300.0  # seconds an allowed decision is cached
    authorization_deny_ttl: float = 30.0  # seconds a denied decision is cached
    webhook: bool = True  # serve the admission webhook's paths on the metrics API's port
    cert_webhook: str = ""  # ValidatingWebhookConfiguration whose caBundle follows the CA


@dataclass(frozen=True, slots=True)
class Settings:
    kubeconfig: str = ""
    log_format: str = "text"
    log_level: str = "info"
    watch: WatchSettings = field(default_factory=WatchSettings)
    leader: LeaderSettings = field(default_factory=LeaderSettings)
    shards: ShardSettings = field(default_factory=ShardSettings)
    poll: PollSettings = field(default_factory=PollSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
