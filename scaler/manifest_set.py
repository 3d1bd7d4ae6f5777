"""`tidal check`'s input as one set: every ScaledObject, ScaledJob, TriggerAuthentication and
ClusterTriggerAuthentication checked by scaler.validation (ScaledJobs by scaler.jobs.check),
against the rest of the set.

The set stands in for the cluster: two ScaledObjects on one workload (the later document is the
one refused, as the apiserver would refuse the second apply), an HPA manifest on a workload, a
TriggerAuthentication a trigger names, the Secrets and ConfigMaps it reads, the Deployment or
StatefulSet a trigger's env and cpu/memory requests come from, LimitRanges. What the set does
not hold is unknown, never an error (scaler.trigger_check).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from scaler.admission import keep_hpa
from scaler.jobs.check import check_scaled_job
from scaler.kube.client import JSON
from scaler.object_parser import read_scaled_object
from scaler.objects import ScaledObject
from scaler.registry import Registry, default_registry
from scaler.validation import (
    Known,
    Problem,
    check_scaled_object,
    check_trigger_auth,
    limit_range_defaults,
)

CHECKED_KINDS = (
    "ScaledObject",
    "ScaledJob",
    "TriggerAuthentication",
    "ClusterTriggerAuthentication",
)
KEDA_GROUP = "keda.sh/"
SKIP_MARK = "# tidal-check: skip"


@dataclass(frozen=True, slots=True)
class Document:
    """One YAML document: where it came from (file, 0-based index in the file) and its body."""

    source: str
    index: int
    body: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Finding:
    """A problem of one checked document."""

    source: str
    index: int
    kind: str
    namespace: str
    name: str
    problem: Problem

    def line(self) -> str:
        p = self.problem
        hint = f" (hint: {p.hint})" if p.hint else ""
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.source}:{self.index}: {self.kind} {where}: {p.field_path}: {p.message}{hint}"

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.source,
            "document": self.index,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "field": self.problem.field_path,
            "message": self.problem.message,
            "hint": self.problem.hint,
        }


def is_checked(body: Mapping[str, Any]) -> bool:
    return str(body.get("apiVersion", "")).startswith(KEDA_GROUP) and body.get("kind") in (
        CHECKED_KINDS
    )


def _meta(body: Mapping[str, Any], default_namespace: str) -> tuple[str, str]:
    meta = body.get("metadata")
    if not isinstance(meta, Mapping):
        return default_namespace, ""
    return str(meta.get("namespace") or default_namespace), str(meta.get("name") or "")


def _with_namespace(body: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    meta = body.get("metadata")
    meta = dict(meta) if isinstance(meta, Mapping) else {}
    meta.setdefault("namespace", namespace)
    if not meta["namespace"]:
        meta["namespace"] = namespace
    return {**body, "metadata": meta}


def _decoded(data: object) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (data if isinstance(data, Mapping) else {}).items():
        try:
            out[str(key)] = base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            out[str(key)] = str(value)
    return out


class _Index:
    """What the set holds, by kind, namespace and name."""

    def __init__(self, docs: Sequence[Document], namespace: str) -> None:
        self.scaled_objects: list[ScaledObject] = []
        self.hpas: dict[tuple[str, str], JSON] = {}
        self.auths: dict[tuple[str, str, str], Mapping[str, Any]] = {}
        self.data: dict[tuple[str, str, str], Mapping[str, str]] = {}
        self.workloads: dict[tuple[str, str, str, str], list[Mapping[str, Any]]] = {}
        self.limit_ranges: dict[str, list[Mapping[str, Any]]] = {}
        for order, doc in enumerate(docs):
            self._add(doc.body, namespace, order)

    def _add(self, body: Mapping[str, Any], default_ns: str, order: int) -> None:
        kind = body.get("kind")
        api = str(body.get("apiVersion", ""))
        ns, name = _meta(body, default_ns)
        if kind == "ScaledObject" and api.startswith(KEDA_GROUP):
            so, _ = read_scaled_object(_with_namespace(body, ns))
            if so.creation_timestamp is None:
                so = _created(so, order)
            self.scaled_objects.append(so)
        elif kind == "TriggerAuthentication" and api.startswith(KEDA_GROUP):
            self.auths[(kind, ns, name)] = _spec(body)
        elif kind == "ClusterTriggerAuthentication" and api.startswith(KEDA_GROUP):
            self.auths[(kind, "", name)] = _spec(body)
        elif kind == "HorizontalPodAutoscaler":
            self.hpas[(ns, name)] = keep_hpa(_with_namespace(body, ns))
        elif kind == "Secret" and api == "v1":
            self.data[("Secret", ns, name)] = {
                **_decoded(body.get("data")),
                **{str(k): str(v) for k, v in (body.get("stringData") or {}).items()},
            }
        elif kind == "ConfigMap" and api == "v1":
            self.data[("ConfigMap", ns, name)] = {
                str(k): str(v) for k, v in (body.get("data") or {}).items()
            }
        elif kind in ("Deployment", "StatefulSet") and api.startswith("apps/"):
            pod = ((_spec(body).get("template") or {}).get("spec")) or {}
            containers = pod.get("containers") if isinstance(pod, Mapping) else None
            if isinstance(containers, list):
                self.workloads[("apps", str(kind), ns, name)] = containers
        elif kind == "LimitRange" and api == "v1":
            self.limit_ranges.setdefault(ns, []).append(body)

    def known(self, registry: Registry) -> Known:
        async def limit_defaults(namespace: str) -> frozenset[str] | None:
            return limit_range_defaults(self.limit_ranges.get(namespace, ()))

        return Known(
            scaled_objects=self.scaled_objects,
            hpas=self.hpas,
            auth_spec=lambda kind, ns, name: self.auths.get(
                (kind, "" if kind == "ClusterTriggerAuthentication" else ns, name)
            ),
            data=lambda kind, ns, name: self.data.get((kind, ns, name)),
            workload=lambda group, kind, ns, name: self.workloads.get((group, kind, ns, name)),
            limit_defaults=limit_defaults,
            registry=registry,
        )


def _spec(body: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = body.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _created(so: ScaledObject, order: int) -> ScaledObject:
    return replace(so, creation_timestamp=float(order))


async def check_documents(
    docs: Sequence[Document],
    *,
    namespace: str = "default",
    registry: Registry | None = None,
) -> tuple[list[Finding], int]:
    """The problems of every checked document, in input order, and how many were checked.
    Objects without a namespace are in `namespace` (kubectl's current namespace)."""
    index = _Index(docs, namespace)
    known = index.known(registry or default_registry())
    findings: list[Finding] = []
    checked = 0
    for order, doc in enumerate(docs):
        body = doc.body
        if not is_checked(body):
            continue
        checked += 1
        kind = str(body["kind"])
        ns, name = _meta(body, namespace)
        if kind == "ScaledObject":
            problems = await check_scaled_object(
                _with_namespace(body, ns), known, created=float(order)
            )
        elif kind == "ScaledJob":
            problems = await check_scaled_job(_with_namespace(body, ns), known)
        else:
            if kind == "ClusterTriggerAuthentication":
                ns = ""
            problems = await check_trigger_auth(body, known)
        findings += [Finding(doc.source, doc.index, kind, ns, name, p) for p in problems]
    return findings, checked
