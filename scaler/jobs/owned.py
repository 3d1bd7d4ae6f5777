"""The Jobs of ScaledJobs and their pods, as two label-selected watches (`scaledjob.keda.sh/name`
on the Job and, through the template, on its pods), reduced to what the counts read, indexed
by ScaledJob and by Job; no list per poll."""

from __future__ import annotations

from collections.abc import Sequence

from scaler.jobs.decide import JobCounts, finished_type, is_pending
from scaler.jobs.spec import GENERATION_ANNOTATION, NAME_LABEL
from scaler.jobs.writer import jobs_path
from scaler.kube.client import JSON, KubeClient
from scaler.kube.paths import namespaced
from scaler.kube.watch import EventType, Handler, Watcher

Key = tuple[str, str]
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


def _keep_job(obj: JSON) -> JSON:
    meta = obj.get("metadata", {})
    status = obj.get("status") or {}
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "resourceVersion": meta.get("resourceVersion"),
            "labels": {NAME_LABEL: (meta.get("labels") or {}).get(NAME_LABEL, "")},
            "annotations": {
                GENERATION_ANNOTATION: (meta.get("annotations") or {}).get(GENERATION_ANNOTATION)
            },
        },
        "status": {
            "conditions": [
                {k: c.get(k) for k in ("type", "status", "lastTransitionTime")}
                for c in status.get("conditions") or ()
            ],
            "completionTime": status.get("completionTime"),
        },
    }


def _keep_pod(obj: JSON) -> JSON:
    meta = obj.get("metadata", {})
    labels = meta.get("labels") or {}
    status = obj.get("status") or {}
    job = next((labels[k] for k in JOB_NAME_LABELS if k in labels), "")
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "resourceVersion": meta.get("resourceVersion"),
            "job": job,
        },
        "status": {
            "phase": status.get("phase"),
            "conditions": [
                {"type": c.get("type"), "status": c.get("status")}
                for c in status.get("conditions") or ()
            ],
        },
    }


async def _ignore(kind: EventType, obj: JSON) -> None:
    return None


class OwnedJobs:
    def __init__(self, kube: KubeClient, namespace: str | None, *, on_job: Handler) -> None:
        self.jobs = Watcher(
            kube,
            jobs_path(namespace) if namespace else "/apis/batch/v1/jobs",
            on_job,
            label_selector=NAME_LABEL,
            keep=_keep_job,
            index=lambda j: (j["metadata"]["namespace"], j["metadata"]["labels"][NAME_LABEL]),
            name="scaledjob jobs",
        )
        self.pods = Watcher(
            kube,
            namespaced("", "v1", "pods", namespace) if namespace else "/api/v1/pods",
            _ignore,
            label_selector=NAME_LABEL,
            keep=_keep_pod,
            index=lambda p: (p["metadata"]["namespace"], p["metadata"]["job"]),
            name="scaledjob pods",
        )
        self.watchers = (self.pods, self.jobs)

    def of(self, key: Key) -> dict[Key, JSON]:
        """The ScaledJob's Jobs, by (namespace, Job name)."""
        return self.jobs.indexed(key)

    def has(self, namespace: str, name: str) -> bool:
        return (namespace, name) in self.jobs.objects

    def counts(self, key: Key, pending_conditions: Sequence[str]) -> JobCounts:
        """KEDA's running (not finished) and pending Jobs of a ScaledJob."""
        running = pending = 0
        for (ns, name), job in self.of(key).items():
            if finished_type(job):
                continue
            running += 1
            pending += is_pending(self.pods.indexed((ns, name)).values(), pending_conditions)
        return JobCounts(running, pending)
