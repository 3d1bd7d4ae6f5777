"""Every write of the ScaledJob controller: Jobs created and deleted, the ScaledJob's status and
its Events. Each write is fenced by `may_write()` (leader or shard member), checked right before
it; a write refused by the fence is skipped, not an error."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from scaler.errors import KubeError, NotLeaderError
from scaler.jobs.render import job_body
from scaler.jobs.spec import API_VERSION, ScaledJob
from scaler.kube.client import KubeClient
from scaler.kube.events import EventRecorder, InvolvedObject
from scaler.kube.paths import namespaced

log = logging.getLogger(__name__)

PROPAGATION = {"background": "Background", "foreground": "Foreground"}


def jobs_path(namespace: str, name: str = "") -> str:
    return namespaced("batch", "v1", "jobs", namespace, name)


def scaled_jobs_path(namespace: str | None = None, name: str = "") -> str:
    if namespace is None:
        return "/apis/keda.sh/v1alpha1/scaledjobs"
    return namespaced("keda.sh", "v1alpha1", "scaledjobs", namespace, name)


class JobWriter:
    def __init__(
        self, kube: KubeClient, events: EventRecorder, may_write: Callable[[], bool]
    ) -> None:
        self._kube = kube
        self._events = events
        self._may_write = may_write

    async def create_jobs(self, sj: ScaledJob, count: int) -> list[str]:
        """Create `count` Jobs from the template; the names created (fewer on errors, each
        reported as a KEDAJobCreateFailed Warning; KEDAJobsCreated for the ones made)."""
        created: list[str] = []
        body = job_body(sj)
        for _ in range(count):
            if not self._may_write():
                break
            try:
                job = await self._kube.create(jobs_path(sj.namespace), body)
            except NotLeaderError:
                break
            except KubeError as exc:
                await self.event(
                    sj,
                    "Warning",
                    "KEDAJobCreateFailed",
                    f"Failed to create job {sj.name}-: {exc}",
                )
                break
            created.append(str(job.get("metadata", {}).get("name", "")))
        if created:
            log.info(
                "jobs created",
                extra={"object": f"{sj.namespace}/{sj.name}", "jobs": created},
            )
            await self.event(sj, "Normal", "KEDAJobsCreated", f"Created {len(created)} jobs")
        return created

    async def delete_jobs(self, sj: ScaledJob, names: list[str], propagation: str) -> int:
        """Delete the named Jobs with the propagation policy; how many were deleted."""
        deleted = 0
        options = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": PROPAGATION[propagation],
        }
        for name in names:
            if not self._may_write():
                break
            try:
                await self._kube.request("DELETE", jobs_path(sj.namespace, name), body=options)
            except NotLeaderError:
                break
            except KubeError as exc:
                if exc.status != 404:
                    log.warning(
                        "job not deleted",
                        extra={"object": f"{sj.namespace}/{name}", "error": str(exc)},
                    )
                    continue
            deleted += 1
        return deleted

    async def write_status(self, sj: ScaledJob, patch: Mapping[str, Any]) -> bool:
        if not self._may_write():
            return False
        try:
            await self._kube.merge_patch(scaled_jobs_path(sj.namespace, sj.name) + "/status", patch)
        except NotLeaderError:
            return False
        except KubeError as exc:
            if exc.status != 404:
                log.warning(
                    "scaledjob status not written",
                    extra={"object": f"{sj.namespace}/{sj.name}", "error": str(exc)},
                )
            return False
        return True

    async def event(self, sj: ScaledJob, type_: str, reason: str, message: str) -> None:
        if not self._may_write():
            return
        involved = InvolvedObject(API_VERSION, "ScaledJob", sj.namespace, sj.name, sj.uid)
        try:
            await self._events.emit(involved, type_, reason, message)
        except NotLeaderError:
            return

    def forget(self, uid: str) -> None:
        self._events.forget((uid,))
