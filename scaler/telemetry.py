"""Prometheus metrics of the daemon: KEDA's names and labels, plus Tidal's own under `tidal_`.

A dashboard built for KEDA reads these unchanged. No label ever holds a secret or a connection
string: labels are namespace, object, trigger type/index and metric names only.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

SCALER_LABELS = ("namespace", "metric", "scaledObject", "scaler", "triggerIndex", "type")


@dataclass(frozen=True, slots=True)
class TriggerLabels:
    namespace: str
    metric: str
    scaled_object: str
    scaler: str
    trigger_index: int

    def values(self) -> tuple[str, str, str, str, str, str]:
        return (
            self.namespace,
            self.metric,
            self.scaled_object,
            self.scaler,
            str(self.trigger_index),
            "scaledobject",
        )


class Telemetry:
    def __init__(self, registry: CollectorRegistry | None = None, version: str = "0.1.0") -> None:
        r = self.registry = registry or CollectorRegistry()
        self.build_info = Gauge(
            "keda_build_info",
            "Build information (Tidal)",
            ["version", "git_commit", "goversion", "goos", "goarch"],
            registry=r,
        )
        self.build_info.labels(version, "", "python", "linux", "amd64").set(1)
        self.scaler_value = Gauge(
            "keda_scaler_metrics_value",
            "The current value of each scaler's metric, as fed to the HPA",
            SCALER_LABELS,
            registry=r,
        )
        self.scaler_latency = Gauge(
            "keda_scaler_metrics_latency_seconds",
            "Latency of the last query of each scaler",
            SCALER_LABELS,
            registry=r,
        )
        self.scaler_active = Gauge(
            "keda_scaler_active", "1 when the trigger is active, else 0", SCALER_LABELS, registry=r
        )
        self.scaler_errors = Counter(
            "keda_scaler_detail_errors",
            "Errors of each scaler",
            SCALER_LABELS,
            registry=r,
        )
        self.object_errors = Counter(
            "keda_scaled_object_errors",
            "Errors of each ScaledObject",
            ["namespace", "scaledObject"],
            registry=r,
        )
        self.object_paused = Gauge(
            "keda_scaled_object_paused",
            "1 when the ScaledObject is paused",
            ["namespace", "scaledObject"],
            registry=r,
        )
        self.resources = Gauge(
            "keda_resource_registered_total",
            "Registered custom resources",
            ["type", "namespace"],
            registry=r,
        )
        self.triggers = Gauge(
            "keda_trigger_registered_total", "Registered triggers by type", ["type"], registry=r
        )
        self.loop_latency = Gauge(
            "keda_internal_scale_loop_latency_seconds",
            "How late the last poll of each object started compared with its schedule",
            ["namespace", "type", "resource"],
            registry=r,
        )
        # Tidal's own.
        self.lateness = Histogram(
            "tidal_scheduler_lateness_seconds",
            "Lateness of every poll against its due time",
            buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5),
            registry=r,
        )
        self.staleness = Gauge(
            "tidal_metric_staleness_seconds",
            "Age of the last good value of each trigger's metric",
            SCALER_LABELS,
            registry=r,
        )
        self.scale_actions = Counter(
            "tidal_scale_actions",
            "Replica changes written by Tidal",
            ["namespace", "scaledObject", "direction", "reason"],
            registry=r,
        )
        self.api_writes = Counter(
            "tidal_api_writes", "Writes to the Kubernetes API by kind", ["kind"], registry=r
        )
        self.decision_to_write = Histogram(
            "tidal_decision_to_write_seconds",
            "Time from a scaling decision to its /scale write completing",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.push_connected = Gauge(
            "tidal_push_subscription_up",
            "1 while a push subscription is connected, 0 while the object falls back to polling",
            ["namespace", "scaledObject", "triggerIndex"],
            registry=r,
        )

    def forget_object(self, namespace: str, name: str) -> None:
        """Drop the label sets of a deleted object so dashboards don't show ghosts."""
        for metric in (self.scaler_value, self.scaler_latency, self.scaler_active, self.staleness):
            for labels in list(metric._metrics):  # prometheus_client has no public listing
                if labels[0] == namespace and labels[2] == name:
                    metric.remove(*labels)
        for g in (self.object_paused,):
            for labels in list(g._metrics):
                if labels == (namespace, name):
                    g.remove(*labels)
