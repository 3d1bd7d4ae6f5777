"""The flags of `tidal run` and the environment variables behind them, read into `Settings`.

Every setting has a flag; most also read an environment variable (KEDA's name where KEDA has
one, so existing deployments keep working). Flags win over the environment.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import socket
from collections.abc import Mapping, Sequence

from scaler.settings import (
    LeaderSettings,
    PollSettings,
    ServeSettings,
    Settings,
    ShardSettings,
    WatchSettings,
)
from scaler.values import parse_bool, parse_duration


def _env(env: Mapping[str, str], *names: str, default: str = "") -> str:
    for n in names:
        if env.get(n):
            return env[n]
    return default


def _bool(text: str) -> bool:
    """A flag or variable in Go's ``strconv.ParseBool`` syntax; anything else is a usage error."""
    try:
        return parse_bool(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid boolean {text!r} (expected one of 1, t, T, TRUE, true, True, "
            "0, f, F, FALSE, false, False)"
        ) from None


def _seconds(text: str) -> float:
    """A Go duration (KEDA's leader-election variables: ``15s``, ``1m``, ``1m30s``) or a plain
    number of seconds; anything else is a usage error."""
    try:
        value = parse_duration(text.strip(), bare_number_unit=1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r} (expected a Go duration such as 15s, 1m or 1m30s, "
            "or a number of seconds)"
        ) from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}")
    return value


def _address_map(text: str) -> tuple[tuple[str, str], ...]:
    """``FROM=TO[,FROM=TO...]`` of IP addresses; anything else is a usage error."""
    out: list[tuple[str, str]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        src, sep, dst = item.partition("=")
        try:
            ipaddress.ip_address(src.strip())
            ipaddress.ip_address(dst.strip())
        except ValueError:
            sep = ""
        if not sep:
            raise argparse.ArgumentTypeError(f"invalid {item!r} (expected FROM=TO, IP addresses)")
        out.append((src.strip(), dst.strip()))
    return tuple(out)


def _namespaced_name(text: str) -> str:
    """``NAMESPACE/NAME`` (or empty); anything else is a usage error."""
    text = text.strip()
    namespace, sep, name = text.partition("/")
    if text and not (sep and namespace and name and "/" not in name):
        raise argparse.ArgumentTypeError(f"invalid {text!r} (expected NAMESPACE/NAME)")
    return text


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The flags of `tidal run`. Defaults read from the environment stay text: argparse converts
    a string default with the flag's `type` only when the flag is absent, so a bad variable is
    the same usage error as a bad flag, and `--help` works whatever the environment holds."""
    e = os.environ if env is None else env
    pod_ns = _env(e, "POD_NAMESPACE", default="tidal-system")
    p = argparse.ArgumentParser(
        prog="tidal run",
        description="Run the Tidal daemon: watch ScaledObjects, scale 0<->1, serve HPA metrics.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = p.add_argument
    a(
        "--kubeconfig",
        default=_env(e, "KUBECONFIG"),
        help="kubeconfig file; empty = in-cluster config [env KUBECONFIG]",
    )
    a(
        "--log-format",
        choices=("text", "json"),
        default=_env(e, "TIDAL_LOG_FORMAT", default="text"),
        help="log line format [env TIDAL_LOG_FORMAT]",
    )
    a(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=_env(e, "TIDAL_LOG_LEVEL", default="info"),
        help="[env TIDAL_LOG_LEVEL]",
    )
    a(
        "--watch-namespace",
        default=_env(e, "WATCH_NAMESPACE"),
        help="only ScaledObjects in this namespace; empty = all [env WATCH_NAMESPACE]",
    )
    a(
        "--watch-label-selector",
        default=_env(e, "WATCH_LABEL_SELECTOR"),
        help="only ScaledObjects matching this label selector [env WATCH_LABEL_SELECTOR]",
    )
    a(
        "--cluster-object-namespace",
        default=_env(e, "KEDA_CLUSTER_OBJECT_NAMESPACE", default=pod_ns),
        help="namespace whose Secrets ClusterTriggerAuthentications read "
        "[env KEDA_CLUSTER_OBJECT_NAMESPACE, then POD_NAMESPACE]",
    )
    a(
        "--leader-elect",
        type=_bool,
        default=_env(e, "TIDAL_LEADER_ELECT", default="true"),
        help="elect one writer through a Lease [env TIDAL_LEADER_ELECT]",
    )
    a(
        "--leader-election-namespace",
        default=pod_ns,
        help="namespace of the Lease [env POD_NAMESPACE]",
    )
    a("--leader-election-id", default="tidal-leader", help="name of the Lease")
    a(
        "--identity",
        default=_env(e, "POD_NAME", default=socket.gethostname()),
        help="this replica's name in the Lease [env POD_NAME]",
    )
    a(
        "--lease-duration",
        type=_seconds,
        default=_env(e, "KEDA_OPERATOR_LEADER_ELECTION_LEASE_DURATION", default="15s"),
        help="Go duration or seconds [env KEDA_OPERATOR_LEADER_ELECTION_LEASE_DURATION]",
    )
    a(
        "--renew-deadline",
        type=_seconds,
        default=_env(e, "KEDA_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE", default="10s"),
        help="Go duration or seconds [env KEDA_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE]",
    )
    a(
        "--retry-period",
        type=_seconds,
        default=_env(e, "KEDA_OPERATOR_LEADER_ELECTION_RETRY_PERIOD", default="2s"),
        help="Go duration or seconds [env KEDA_OPERATOR_LEADER_ELECTION_RETRY_PERIOD]",
    )
    a(
        "--shards",
        choices=("off", "auto"),
        default=_env(e, "TIDAL_SHARDS", default="off"),
        help="auto: every replica is active and owns a share of the objects, assigned through "
        "member Leases (replaces leader election; needs --cert-secret when the metrics API is "
        "on); off: one leader writes [env TIDAL_SHARDS]",
    )
    a(
        "--shard-peer-address",
        default=_env(e, "TIDAL_SHARD_PEER_ADDRESS", default="0.0.0.0:6444"),
        help="host:port of the HTTPS listener that answers other replicas' metric reads "
        "(--shards auto) [env TIDAL_SHARD_PEER_ADDRESS]",
    )
    a(
        "--shard-advertise-address",
        default=_env(e, "TIDAL_SHARD_ADVERTISE_ADDRESS"),
        help="host:port other replicas dial for this one's metrics; empty = $POD_IP (else the "
        "hostname) and the peer port [env TIDAL_SHARD_ADVERTISE_ADDRESS]",
    )
    a(
        "--http-timeout-ms",
        type=int,
        default=_env(e, "KEDA_HTTP_DEFAULT_TIMEOUT", default="3000"),
        help="default timeout of one scaler query, ms [env KEDA_HTTP_DEFAULT_TIMEOUT]",
    )
    a("--max-concurrent-polls", type=int, default=200, help="objects polled at the same time")
    a(
        "--http-interceptors",
        default=_env(e, "TIDAL_HTTP_INTERCEPTORS"),
        help="comma list of tidal intercept admin addresses (host:port; a headless Service "
        "name resolves to every replica): reconcile HTTPScaledObjects into ScaledObjects "
        "reading them; empty = HTTPScaledObjects are not handled [env TIDAL_HTTP_INTERCEPTORS]",
    )
    a(
        "--endpoint-address-map",
        type=_address_map,
        default=_env(e, "TIDAL_ENDPOINT_ADDRESS_MAP"),
        help="comma list of FROM=TO: Service endpoint addresses rewritten before Tidal dials "
        "them (metrics-api aggregateFromKubeServiceEndpoints), for a cluster whose pod IPs "
        "Tidal cannot reach directly [env TIDAL_ENDPOINT_ADDRESS_MAP]",
    )
    a(
        "--metrics-address",
        default=_env(e, "TIDAL_METRICS_ADDRESS", default="0.0.0.0:8080"),
        help="host:port of /metrics, /healthz, /readyz [env TIDAL_METRICS_ADDRESS]",
    )
    a(
        "--api-address",
        default=_env(e, "TIDAL_API_ADDRESS"),
        help="host:port of the external metrics API (HTTPS); empty = off [env TIDAL_API_ADDRESS]",
    )
    a(
        "--tls-cert-file",
        default=_env(e, "TIDAL_TLS_CERT_FILE"),
        help="serving certificate; empty = self-signed for development [env TIDAL_TLS_CERT_FILE]",
    )
    a("--tls-key-file", default=_env(e, "TIDAL_TLS_KEY_FILE"), help="[env TIDAL_TLS_KEY_FILE]")
    a(
        "--requestheader-client-ca-file",
        default="",
        help="CA of the aggregator's client cert; empty = ConfigMap "
        "kube-system/extension-apiserver-authentication",
    )
    a(
        "--requestheader-allowed-names",
        default="front-proxy-client",
        help="comma list of CNs allowed to assert X-Remote-User; empty = any cert from the CA",
    )
    a(
        "--metrics-authorization",
        choices=("delegated", "none"),
        default=_env(e, "TIDAL_METRICS_AUTHORIZATION", default="delegated"),
        help="authorize each metrics API request with a SubjectAccessReview for the user the "
        "aggregator asserts (delegated), or trust the aggregator alone (none) "
        "[env TIDAL_METRICS_AUTHORIZATION]",
    )
    a(
        "--authorization-cache-ttl",
        type=_seconds,
        default=_env(e, "TIDAL_AUTHORIZATION_CACHE_TTL", default="5m"),
        help="how long an allowed SubjectAccessReview is reused (Go duration) "
        "[env TIDAL_AUTHORIZATION_CACHE_TTL]",
    )
    a(
        "--authorization-deny-cache-ttl",
        type=_seconds,
        default=_env(e, "TIDAL_AUTHORIZATION_DENY_CACHE_TTL", default="30s"),
        help="how long a denied SubjectAccessReview is reused (Go duration) "
        "[env TIDAL_AUTHORIZATION_DENY_CACHE_TTL]",
    )
    a(
        "--cert-secret",
        type=_namespaced_name,
        default=_env(e, "TIDAL_CERT_SECRET"),
        help="NAMESPACE/NAME of a Secret in which Tidal keeps its own serving CA and certificate "
        "(created, rotated, shared by every replica); empty = not managed [env TIDAL_CERT_SECRET]",
    )
    a(
        "--cert-apiservice",
        default=_env(e, "TIDAL_CERT_APISERVICE", default="v1beta1.external.metrics.k8s.io"),
        help="APIService whose spec.caBundle follows the managed CA; empty = leave APIServices "
        "alone [env TIDAL_CERT_APISERVICE]",
    )
    a(
        "--cert-webhook",
        default=_env(e, "TIDAL_CERT_WEBHOOK"),
        help="ValidatingWebhookConfiguration whose webhooks' caBundle follows the managed CA; "
        "empty = leave webhook configurations alone [env TIDAL_CERT_WEBHOOK]",
    )
    a(
        "--webhook",
        type=_bool,
        default=_env(e, "TIDAL_WEBHOOK", default="true"),
        help="serve the validating admission webhook (/validate-keda-sh-v1alpha1-*) on the "
        "metrics API's HTTPS port, when that is on [env TIDAL_WEBHOOK]",
    )
    a(
        "--cert-service",
        type=_namespaced_name,
        default=_env(e, "TIDAL_CERT_SERVICE", default=f"{pod_ns}/tidal-metrics-api"),
        help="NAMESPACE/NAME of the Service in front of the metrics API: the managed certificate's "
        "DNS names [env TIDAL_CERT_SERVICE]",
    )
    a(
        "--cert-dir",
        default=_env(e, "TIDAL_CERT_DIR"),
        help="writable directory for the PEM files written at run time (mode 0600, in a private "
        "subdirectory); empty = the temp dir, $TMPDIR or /tmp [env TIDAL_CERT_DIR]",
    )
    a(
        "--cert-validity",
        type=_seconds,
        default=_env(e, "TIDAL_CERT_VALIDITY", default="8760h"),
        help="lifetime of the managed serving certificate; renewed when a third is left "
        "[env TIDAL_CERT_VALIDITY]",
    )
    a(
        "--cert-ca-validity",
        type=_seconds,
        default=_env(e, "TIDAL_CERT_CA_VALIDITY", default="43800h"),
        help="lifetime of the managed CA; replaced when a third is left "
        "[env TIDAL_CERT_CA_VALIDITY]",
    )
    a(
        "--cert-overlap",
        type=_seconds,
        default=_env(e, "TIDAL_CERT_OVERLAP", default="10m"),
        help="how long a new CA sits in the caBundle before it signs the serving certificate, "
        "and an old one stays after [env TIDAL_CERT_OVERLAP]",
    )
    return p


def settings_from_args(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Settings:
    parser = build_parser(env)
    ns = parser.parse_args(list(argv))
    if ns.shards == "auto" and ns.api_address and not ns.cert_secret:
        parser.error(
            "--shards auto with the metrics API on needs --cert-secret: replicas forward metric "
            "reads to each other over TLS with Tidal's own CA (docs/sharding.md)"
        )
    e = os.environ if env is None else env
    return Settings(
        kubeconfig=ns.kubeconfig,
        log_format=ns.log_format,
        log_level=ns.log_level,
        watch=WatchSettings(
            namespace=ns.watch_namespace,
            label_selector=ns.watch_label_selector,
            cluster_object_namespace=ns.cluster_object_namespace,
        ),
        leader=LeaderSettings(
            enabled=ns.leader_elect and ns.shards != "auto",
            namespace=ns.leader_election_namespace,
            name=ns.leader_election_id,
            identity=ns.identity,
            lease_duration=ns.lease_duration,
            renew_deadline=ns.renew_deadline,
            retry_period=ns.retry_period,
        ),
        shards=ShardSettings(
            mode=ns.shards,
            peer_address=ns.shard_peer_address,
            advertise=ns.shard_advertise_address or _advertise(e, ns.shard_peer_address),
        ),
        poll=PollSettings(
            http_timeout=ns.http_timeout_ms / 1000.0,
            max_concurrent=ns.max_concurrent_polls,
            endpoint_address_map=ns.endpoint_address_map,
            http_interceptors=tuple(
                a.strip() for a in ns.http_interceptors.split(",") if a.strip()
            ),
        ),
        serve=ServeSettings(
            metrics_address=ns.metrics_address,
            api_address=ns.api_address,
            tls_cert_file=ns.tls_cert_file,
            tls_key_file=ns.tls_key_file,
            client_ca_file=ns.requestheader_client_ca_file,
            allowed_names=tuple(n for n in ns.requestheader_allowed_names.split(",") if n),
            cert_secret=ns.cert_secret,
            cert_apiservice=ns.cert_apiservice,
            cert_service=ns.cert_service,
            cert_dir=ns.cert_dir,
            cert_validity=ns.cert_validity,
            cert_ca_validity=ns.cert_ca_validity,
            cert_overlap=ns.cert_overlap,
            metrics_authorization=ns.metrics_authorization,
            authorization_allow_ttl=ns.authorization_cache_ttl,
            authorization_deny_ttl=ns.authorization_deny_cache_ttl,
            webhook=ns.webhook,
            cert_webhook=ns.cert_webhook,
        ),
    )


def _advertise(env: Mapping[str, str], peer_address: str) -> str:
    """$POD_IP (the chart sets it from the downward API), else the hostname, with the peer
    listener's port."""
    port = peer_address.rpartition(":")[2]
    host = env.get("POD_IP") or socket.gethostname()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
