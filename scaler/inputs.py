"""What the daemon reads from the API: the watches and what each event changes.

Watch handlers only record what changed and wake the object; they never wait on an object, a
broker or a write (safety rule 6). A ScaledObject event admits, replaces or removes the object's
runtime (scaler.table); an event on something a build read — a (Cluster)TriggerAuthentication,
a Secret or ConfigMap in the reference index, someone else's HPA — invalidates the runtimes
built from it; an edit of one of our HPAs marks it for the actuator to put back.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from scaler.actuator import Actuator
from scaler.admission import hpa_workload, keep_hpa
from scaler.errors import ConfigError, KubeError
from scaler.finalizers import FINALIZER, Finalizers
from scaler.kube.client import JSON, KubeClient
from scaler.kube.paths import KEDA_GROUP, KEDA_VERSION, api_prefix, scaled_objects
from scaler.kube.watch import EventType, Watcher, object_key
from scaler.object_parser import parse_scaled_object
from scaler.objects import SO_NAME_LABEL, ScaledObject, hpa_name, parse_timestamp
from scaler.runtime import Phase, Ref
from scaler.settings import WatchSettings
from scaler.table import ObjectTable, later

log = logging.getLogger(__name__)

Key = tuple[str, str]
CLAIM_READS = 16  # objects read at once when a shard takes objects over
FINALIZE_RETRY = 5.0  # seconds between retries of a finalization still pending


class Inputs:
    def __init__(
        self,
        kube: KubeClient,
        watch: WatchSettings,
        table: ObjectTable,
        actuator: Actuator,
        finalizers: Finalizers,
        *,
        may_write: Callable[[], bool],
        owns: Callable[[Key], bool] = lambda key: True,
    ) -> None:
        self._kube = kube
        self._owns = owns
        self._claims: set[Key] = set()  # owned now, not in the table yet (scaler.shards)
        self._claimed = asyncio.Event()
        self._claim_reads = asyncio.Semaphore(CLAIM_READS)
        # Objects being deleted whose finalizer is still ours to remove: key -> (last seen
        # object, its parsed form while it ran here).
        self._finalizing: dict[Key, tuple[JSON, ScaledObject | None]] = {}
        self._table = table
        self._actuator = actuator
        self._finalizers = finalizers
        self._may_write = may_write
        self._by_ref: dict[Ref, set[Key]] = {}
        self._refs_of: dict[Key, frozenset[Ref]] = {}
        ns = watch.namespace
        keda = api_prefix(KEDA_GROUP, KEDA_VERSION)
        ns_part = f"/namespaces/{ns}" if ns else ""
        self.scaled_objects = Watcher(
            kube,
            scaled_objects(ns or None),
            self._on_scaled_object,
            label_selector=watch.label_selector or None,
            name="scaledobjects",
            keep=_keep_meta,  # the parsed object lives in the runtime; the cache needs rv only
        )
        self.trigger_auths = Watcher(
            kube, f"{keda}{ns_part}/triggerauthentications", self._on_auth, name="triggerauths"
        )
        self.cluster_trigger_auths = Watcher(
            kube, f"{keda}/clustertriggerauthentications", self._on_auth, name="clustertriggerauths"
        )
        # Every HPA, not only ours: the ownership check must see HPAs someone else made.
        self.hpas = Watcher(
            kube,
            f"/apis/autoscaling/v2{ns_part}/horizontalpodautoscalers",
            self._on_hpa,
            name="hpas",
            keep=keep_hpa,
            index=hpa_workload,
        )
        # Metadata-only watches of Secrets and ConfigMaps: a change to one an object read while
        # building its scalers (auth params, *FromEnv) rebuilds that object. No values are read.
        self.references = [
            Watcher(
                kube,
                f"/api/v1{ns_part}/{resource}",
                functools.partial(self._on_ref, kind),
                name=resource,
                metadata_only=True,
                keep=_keep_meta,
            )
            for kind, resource in (("Secret", "secrets"), ("ConfigMap", "configmaps"))
        ]

    @property
    def dependencies(self) -> tuple[Watcher, ...]:
        """The watches a build reads from: synced before the ScaledObjects are listed."""
        return (self.trigger_auths, self.cluster_trigger_auths, self.hpas, *self.references)

    # ------------------------------------------------------------------ what builds read

    async def auth_spec(self, kind: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        if kind == "ClusterTriggerAuthentication":
            obj = self.cluster_trigger_auths.objects.get(("", name))
        else:
            obj = self.trigger_auths.objects.get((namespace, name))
        return None if obj is None else dict(obj.get("spec") or {})

    def foreign_hpas(self) -> Mapping[tuple[str, str], JSON]:
        """Every HPA the watch keeps (reduced by keep_hpa)."""
        return self.hpas.objects

    def hpas_on(self, namespace: str, workload: str) -> Mapping[tuple[str, str], JSON]:
        """The HPAs (reduced by keep_hpa) that scale a workload of this name in `namespace`."""
        return self.hpas.indexed((namespace, workload))

    def index_refs(self, key: Key, refs: frozenset[Ref]) -> None:
        """Remember which Secrets and ConfigMaps the object's build read (empty: forget)."""
        old = self._refs_of.pop(key, frozenset())
        if refs:
            self._refs_of[key] = refs
        for ref in old - refs:
            keys = self._by_ref.get(ref)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_ref[ref]
        for ref in refs - old:
            self._by_ref.setdefault(ref, set()).add(key)

    def referenced(self) -> int:
        """How many Secrets and ConfigMaps some build read (the reference index's size)."""
        return len(self._by_ref)

    def _invalidate(self, keys: Iterable[Key]) -> None:
        for key in keys:
            rt = self._table.get(key)
            if rt is not None:
                rt.invalidate()
                self._table.wake(key)

    # ------------------------------------------------------------------ sharding

    def rebalance(self) -> None:
        """The members changed (`--shards auto`): drop the objects another replica owns now,
        at once (their runtimes retire, so a poll in flight writes nothing), and claim the
        ones this replica owns now (each read fresh by `run_claims`)."""
        moved = [key for key in self._table if not self._owns(key)]
        for key in self._table.remove_many(moved):
            self.index_refs(key, frozenset())
        for key in self.scaled_objects.objects:
            if self._owns(key) and self._table.get(key) is None:
                self._claims.add(key)
        if self._claims:
            self._claimed.set()

    async def run_claims(self) -> None:
        """Reads each claimed object (the watch cache keeps only its metadata; CLAIM_READS at
        a time) and admits it as a watch event would; a read that fails is retried with a
        backoff, a deleted object is dropped."""
        backoff = 0.5
        while True:
            await self._claimed.wait()
            self._claimed.clear()
            claims, self._claims = self._claims, set()
            results = await asyncio.gather(
                *(self._claim(key) for key in claims), return_exceptions=True
            )
            failed = [key for key, ok in zip(claims, results, strict=True) if ok is False]
            for key, ok in zip(claims, results, strict=True):
                if isinstance(ok, BaseException):  # one object must not stop claiming
                    log.error(
                        "claimed object not admitted",
                        extra={"object": f"{key[0]}/{key[1]}", "error": repr(ok)},
                    )
            if failed:
                self._claims.update(failed)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                self._claimed.set()
            else:
                backoff = 0.5

    async def _claim(self, key: Key) -> bool:
        """False when the read failed (retried later)."""
        if not self._owns(key) or self._table.get(key) is not None:
            return True
        async with self._claim_reads:
            try:
                raw = await self._kube.get_or_none(scaled_objects(key[0], key[1]))
            except KubeError as exc:
                log.warning(
                    "claimed object not read",
                    extra={"object": f"{key[0]}/{key[1]}", "error": str(exc)},
                )
                return False
        # The watch may have acted while the GET was in flight: an edit admitted the newer
        # spec (the table has it now), a deletion dropped the key from the cache. Then the
        # watch wins; admitting the GET's answer would bring back an older or deleted object.
        current = self._table.get(key) is None and key in self.scaled_objects.objects
        if raw is not None and self._owns(key) and current:
            await self._on_scaled_object("MODIFIED", raw)
        return True

    async def run_finalizers(self, every: float = FINALIZE_RETRY) -> None:
        """Retries the finalization of objects still being deleted `every` seconds after it was
        skipped or failed: read fresh, finalized if this replica may write and owns them.
        Without it a deletion seen while standing by (or joining a shard ring) waited for the
        watch's next relist; a namespace deletion hung meanwhile."""
        while True:
            await asyncio.sleep(every)
            for key in list(self._finalizing):
                if not (self._may_write() and self._owns(key)):
                    continue
                try:
                    raw = await self._kube.get_or_none(scaled_objects(key[0], key[1]))
                except KubeError:
                    continue
                meta = (raw or {}).get("metadata") or {}
                pending = self._finalizing.get(key)
                if raw is None or not meta.get("deletionTimestamp") or pending is None:
                    self._finalizing.pop(key, None)
                    continue
                if FINALIZER not in (meta.get("finalizers") or []):
                    self._finalizing.pop(key, None)
                    continue
                await self._finalizers.finalize(key, raw, pending[1])

    # ------------------------------------------------------------------ handlers

    async def _on_scaled_object(self, kind: EventType, raw: JSON) -> None:
        key = object_key(raw)
        meta = raw.get("metadata", {})
        if kind == "DELETED":
            self._forget(key)
            self._finalizing.pop(key, None)
            return
        if not self._owns(key):  # another replica's (scaler.shards); it moved away, perhaps
            if self._table.get(key) is not None:
                self._forget(key)
            return
        if meta.get("deletionTimestamp"):
            gone = self._forget(key)
            if FINALIZER in (meta.get("finalizers") or []):
                # Until the API says DELETED: a finalization skipped (this replica may not
                # write now: standby, joining) or failed is retried (run_finalizers).
                known = self._finalizing.get(key, (raw, None))[1]
                self._finalizing[key] = (raw, gone or known)
            if self._may_write():
                await self._finalizers.finalize(key, raw, gone)
            return
        rt = self._table.get(key)
        status = dict(raw.get("status") or {})
        if rt is not None and not _spec_changed(rt.so, raw):
            rt.written.status_observed(status)
            # Another writer (an old leader) may have recorded a later activity.
            stored = parse_timestamp(status.get("lastActiveTime"))
            rt.last_active_time = later(rt.last_active_time, stored)
            return
        try:
            so = parse_scaled_object(raw)
        except ConfigError as problem:
            self._forget(key)
            await self._actuator.report_invalid(raw, problem)
            return
        finalizers = tuple(str(f) for f in meta.get("finalizers") or [])
        rt = self._table.admit(so, status, finalizer=FINALIZER in finalizers)
        rt.written.seen_finalizers = finalizers

    def _forget(self, key: Key) -> ScaledObject | None:
        rt = self._table.remove(key)
        self.index_refs(key, frozenset())
        return None if rt is None else rt.so

    async def _on_auth(self, kind: EventType, raw: JSON) -> None:
        ns, name = object_key(raw)
        auth_kind = raw.get("kind", "")
        self._invalidate(
            key
            for key, rt in self._table.items()
            if any(
                t.authentication_ref is not None
                and t.authentication_ref.name == name
                and t.authentication_ref.kind == auth_kind
                and (auth_kind != "TriggerAuthentication" or key[0] == ns)
                for t in rt.so.triggers
            )
        )

    async def _on_ref(self, ref_kind: str, kind: EventType, raw: JSON) -> None:
        meta = raw.get("metadata", {})
        ref = (ref_kind, str(meta.get("namespace", "")), str(meta.get("name", "")))
        self._invalidate(list(self._by_ref.get(ref, ())))

    async def _on_hpa(self, kind: EventType, raw: JSON) -> None:
        meta = raw.get("metadata", {})
        ns = meta.get("namespace", "")
        so_name = (meta.get("labels") or {}).get(SO_NAME_LABEL)
        if so_name is None:
            # Someone else's HPA: an object it blocked may be free now (or be blocked now).
            for key, other in self._table.items():
                if key[0] == ns and (other.phase is Phase.BLOCKED or kind == "ADDED"):
                    other.invalidate()
            return
        key = (ns, str(so_name))
        rt = self._table.get(key)
        if rt is None or rt.build is None or rt.so.flags.paused:
            return
        if kind == "DELETED":
            rt.written.hpa_dirty = True
            self._table.wake(key)
        elif meta.get("name") == hpa_name(rt.so) and self._actuator.hpa_needs_write(
            rt, rt.build.target, raw
        ):
            self._table.wake(key)


def _keep_meta(obj: JSON) -> JSON:
    meta = obj.get("metadata", {})
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "resourceVersion": meta.get("resourceVersion"),
        },
    }


def _spec_changed(so: ScaledObject, raw: JSON) -> bool:
    """A change Tidal must act on: spec (generation), labels or annotations."""
    meta = raw.get("metadata", {})
    if int(meta.get("generation") or 0) != so.generation:
        return True
    if dict(meta.get("labels") or {}) != dict(so.labels):
        return True
    return dict(meta.get("annotations") or {}) != dict(so.annotations)
