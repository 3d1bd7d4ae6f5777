"""One validation core for the admission webhook and `tidal check`: a manifest in, every
problem out, each with the field it is about, KEDA's message and a hint.

What it checks is what the daemon does, by calling the daemon's own code:

* the ScaledObject's parser (scaler.object_parser: bounds, fallback, trigger names, names'
  lengths, annotations, metric types, Tidal's unsupported features);
* KEDA's ownership rules (scaler.admission `ownership_problem`: one ScaledObject per workload,
  the oldest keeps it; no HPA of someone else's unless adopted), and KEDA's webhook rule that two
  ScaledObjects may not share an HPA name;
* every trigger's metadata, parsed as a build parses it (scaler.trigger_check);
* KEDA's webhook rules on cpu/memory triggers: the workload's containers request the resource
  (or a LimitRange gives a default), and a cpu/memory-only object can't have minReplicaCount 0;
* (Cluster)TriggerAuthentication specs (scaler.auth: `filePath` and the other sources Tidal
  does not read are refused, and so on).

Pure but for what the caller passes in `Known`: the webhook passes the daemon's watch caches,
`tidal check` the other manifests of its input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from scaler.admission import ownership_problem
from scaler.auth import UNSUPPORTED_SOURCES, AuthKind, resolve_auth_params
from scaler.errors import ConfigError
from scaler.field_reader import FieldProblem
from scaler.kube.client import JSON
from scaler.kube.paths import GVKR
from scaler.object_parser import read_scaled_object
from scaler.objects import ScaledObject, hpa_name
from scaler.registry import Registry, default_registry
from scaler.trigger_check import (
    UNKNOWN_ENV,
    AuthSpec,
    KnownData,
    OpenEnv,
    check_trigger,
    container_env,
    fetcher,
)

AUTH_KINDS = ("TriggerAuthentication", "ClusterTriggerAuthentication")
WORKLOAD_KINDS = (("apps", "Deployment"), ("apps", "StatefulSet"))  # KEDA's cpu/memory check


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem of one manifest: where (``spec.triggers[1].metadata.listName``), what (KEDA's
    wording where KEDA has one), and how to fix it ("" when the message says it all)."""

    field_path: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        return f"{self.field_path}: {self.message}"


Workloads = Callable[[str, str, str, str], Sequence[Mapping[str, Any]] | None]
"""(group, kind, namespace, name) → the pod template's containers, or None when unknown."""
LimitDefaults = Callable[[str], Awaitable[frozenset[str] | None]]
"""namespace → the resources a LimitRange gives containers a default for (None: unknown)."""


def _no_auth(kind: str, namespace: str, name: str) -> Mapping[str, Any] | None:
    return None


def _no_data(kind: str, namespace: str, name: str) -> Mapping[str, str] | None:
    return None


def _no_workload(group: str, kind: str, namespace: str, name: str) -> None:
    return None


async def _no_defaults(namespace: str) -> frozenset[str] | None:
    return frozenset()


@dataclass(frozen=True, slots=True)
class Known:
    """What else is known when a manifest is checked. The defaults know nothing: cross-object
    rules find nothing to object to, and every value from a Secret, ConfigMap or env is unseen.

    `scaled_objects` are the others (the object itself is skipped by name); an object without a
    creationTimestamp counts as the newest of them (a create). `hpas` are in the form the
    daemon's watch keeps (scaler.admission `keep_hpa`)."""

    scaled_objects: Sequence[ScaledObject] = ()
    hpas: Mapping[tuple[str, str], JSON] = field(default_factory=dict)
    auth_spec: AuthSpec = _no_auth
    data: KnownData = _no_data
    workload: Workloads = _no_workload
    limit_defaults: LimitDefaults = _no_defaults
    cluster_namespace: str = ""
    registry: Registry = field(default_factory=default_registry)
    timeout: float = 3.0


NOTHING_KNOWN = Known()


async def check_scaled_object(
    raw: Mapping[str, Any], known: Known = NOTHING_KNOWN, *, created: float = math.inf
) -> list[Problem]:
    """Every problem of one ScaledObject manifest (an empty list: the daemon would run it).
    `created` stands in for a creationTimestamp the manifest lacks (default: the newest object,
    as for a create)."""
    so, parsed = read_scaled_object(raw)
    problems = [_from_parser(p) for p in parsed]
    if so.creation_timestamp is None:
        so = replace(so, creation_timestamp=created)
    ref = so.scale_target_ref
    try:
        group, version, kind = ref.gvk
    except ValueError:
        return problems  # the parser reported it
    target = GVKR(group, version, kind, "")
    if ref.name:
        problems += _ownership(so, target, known)
    containers = known.workload(group, kind, so.namespace, ref.name) if ref.name else None
    problems += await _resource_triggers(so, target, containers, known)
    env: Mapping[str, str] = UNKNOWN_ENV
    if containers is not None and any(_needs_env(so, i) for i in range(len(so.triggers))):
        env, located = await container_env(so, containers, known.data)
        problems += [Problem(path, message) for path, message in located]
    return problems + await trigger_problems(so, env, known)


async def trigger_problems(so: ScaledObject, env: Mapping[str, str], known: Known) -> list[Problem]:
    """Every trigger's metadata parsed as a build parses it (ScaledObjects and ScaledJobs)."""
    problems: list[Problem] = []
    for trig in so.triggers:
        if not trig.type:
            continue  # the parser reported it
        located = await check_trigger(
            so,
            trig,
            env,
            registry=known.registry,
            auth_spec=known.auth_spec,
            known=known.data,
            cluster_namespace=known.cluster_namespace,
            timeout=known.timeout,
        )
        problems += [Problem(path, message, _trigger_hint(trig.type)) for path, message in located]
    return problems


def _needs_env(so: ScaledObject, index: int) -> bool:
    trig = so.triggers[index]
    return trig.authentication_ref is not None or any(k.endswith("FromEnv") for k in trig.metadata)


def _ownership(so: ScaledObject, target: GVKR, known: Known) -> list[Problem]:
    problems: list[Problem] = []
    owner = ownership_problem(so, target, known.scaled_objects, known.hpas)
    if owner is not None:
        problems.append(Problem("spec.scaleTargetRef", owner, _owner_hint(so, owner)))
    mine = hpa_name(so)
    for other in known.scaled_objects:
        if other.namespace != so.namespace or other.name == so.name or hpa_name(other) != mine:
            continue
        if (other.creation_timestamp or 0.0, other.name) < (so.creation_timestamp or 0.0, so.name):
            problems.append(
                Problem(
                    "spec.advanced.horizontalPodAutoscalerConfig.name",
                    f"the HPA '{mine}' is already managed by the ScaledObject '{other.name}'",
                    "give this object's HPA another name",
                )
            )
    return problems


_HPA_OWNER = re.compile(r"already managed by the hpa '([^']+)'")


def _owner_hint(so: ScaledObject, message: str) -> str:
    match = _HPA_OWNER.search(message)
    if match is None:
        return "point scaleTargetRef at another workload, or delete the other ScaledObject"
    hpa = match.group(1)
    if so.flags.transfer_hpa_ownership:
        return (
            f"to adopt it, set spec.advanced.horizontalPodAutoscalerConfig.name: {hpa} "
            "(the transfer-hpa-ownership annotation names no HPA by itself)"
        )
    return (
        f"delete HPA '{hpa}', or adopt it: annotate the ScaledObject "
        'scaledobject.keda.sh/transfer-hpa-ownership: "true" and set '
        f"spec.advanced.horizontalPodAutoscalerConfig.name: {hpa}"
    )


async def _resource_triggers(
    so: ScaledObject,
    target: GVKR,
    containers: Sequence[Mapping[str, Any]] | None,
    known: Known,
) -> list[Problem]:
    """KEDA's verifyCPUMemoryScalers."""
    resource = [t for t in so.triggers if t.is_resource]
    if not resource:
        return []
    problems: list[Problem] = []
    if all(t.is_resource for t in so.triggers) and so.min_replica_count == 0:
        problems.append(
            Problem(
                "spec.minReplicaCount",
                "scaledobject has only cpu/memory triggers AND minReplica is 0 "
                "(scale to zero doesn't work in this case)",
                "set minReplicaCount to 1 or more, or add a trigger that is not cpu or memory",
            )
        )
    if containers is None or (target.group, target.kind) not in WORKLOAD_KINDS:
        return problems
    defaults: frozenset[str] | None = None
    asked = False
    for trig in resource:
        wanted = trig.metadata.get("containerName", "")
        for container in containers:
            name = str(container.get("name", ""))
            if wanted and name != wanted:
                continue
            if _resource_set(container.get("resources"), trig.type):
                continue
            if not asked:
                defaults, asked = await known.limit_defaults(so.namespace), True
            if defaults is None or trig.type in defaults:
                continue  # a LimitRange default (or unknown: never refuse on a guess)
            problems.append(
                Problem(
                    f"spec.triggers[{trig.index}]",
                    f"the scaledobject has a {trig.type} trigger but the container {name} "
                    f"doesn't have the {trig.type} request defined",
                    f"set resources.requests.{trig.type} on container {name} of "
                    f"{target.kind} {so.scale_target_ref.name} (or a LimitRange default)",
                )
            )
    return problems


_QUANTITY = re.compile(r"\s*\+?(\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def positive_quantity(value: object) -> bool:
    """A Kubernetes quantity above zero (KEDA: AsApproximateFloat64() > 0)."""
    match = _QUANTITY.match(str(value)) if isinstance(value, str | int | float) else None
    return match is not None and float(match.group(0)) > 0


def _resource_set(resources: object, name: str) -> bool:
    """KEDA's isWorkloadResourceSet: a request or a limit above zero."""
    if not isinstance(resources, Mapping):
        return False
    for part in ("requests", "limits"):
        values = resources.get(part)
        if isinstance(values, Mapping) and positive_quantity(values.get(name)):
            return True
    return False


def limit_range_defaults(limit_ranges: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """The resources LimitRanges give containers a default request or limit for (KEDA's
    isContainerResourceSetInLimitRangeObject)."""
    found: set[str] = set()
    for lr in limit_ranges:
        for item in (lr.get("spec") or {}).get("limits") or []:
            if not isinstance(item, Mapping) or item.get("type") != "Container":
                continue
            for part in ("default", "defaultRequest"):
                values = item.get(part)
                if isinstance(values, Mapping):
                    found.update(k for k, v in values.items() if positive_quantity(v))
    return frozenset(found)


# ---------------------------------------------------------------------- TriggerAuthentication


async def check_trigger_auth(raw: Mapping[str, Any], known: Known = NOTHING_KNOWN) -> list[Problem]:
    """Every problem of one TriggerAuthentication or ClusterTriggerAuthentication manifest:
    what scaler.auth would refuse when a trigger uses it, and KEDA's webhook rule on
    podIdentity.identityId. Secrets, ConfigMaps and env it names need not exist yet."""
    kind = str(raw.get("kind") or "TriggerAuthentication")
    problems: list[Problem] = []
    meta = raw.get("metadata")
    if not isinstance(meta, Mapping) or not meta.get("name"):
        problems.append(Problem("metadata.name", "metadata.name is required"))
    spec = raw.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        return [*problems, Problem("spec", "spec must be an object")]
    identity = spec.get("podIdentity")
    if isinstance(identity, Mapping) and identity.get("identityId") == "":
        problems.append(
            Problem(
                "spec.podIdentity.identityId",
                "identityId of PodIdentity should not be empty",
                "remove identityId or give one",
            )
        )
    namespace = str(meta.get("namespace") or "") if isinstance(meta, Mapping) else ""
    try:
        await resolve_auth_params(
            spec,
            namespace=namespace,
            env=OpenEnv({}, open_=True),
            fetch=fetcher(known.data),
            kind="ClusterTriggerAuthentication"
            if kind == AUTH_KINDS[1]
            else "TriggerAuthentication",
            cluster_namespace=known.cluster_namespace or "unseen",
        )
    except ConfigError as exc:
        problems += [Problem(_auth_path(p), p, _auth_hint(p)) for p in exc.problems]
    return problems


def _auth_kind(kind: str) -> AuthKind:
    return (
        "ClusterTriggerAuthentication"
        if kind == "ClusterTriggerAuthentication"
        else ("TriggerAuthentication")
    )


_AUTH_ENTRY = re.compile(r"^(secretTargetRef|configMapTargetRef|env)\[(\d+)\]")
_AUTH_SOURCE = re.compile(r"source '([^']+)'")


def _auth_path(message: str) -> str:
    if (match := _AUTH_ENTRY.match(message)) is not None:
        return f"spec.{match.group(1)}[{match.group(2)}]"
    if message.startswith("podIdentity"):
        return "spec.podIdentity.provider"
    if (match := _AUTH_SOURCE.search(message)) is not None:
        return f"spec.{match.group(1)}"
    for source in ("secretTargetRef", "configMapTargetRef", "env"):
        if source in message:
            return f"spec.{source}"
    return "spec"


def _auth_hint(message: str) -> str:
    if any(f"'{s}'" in message for s in UNSUPPORTED_SOURCES) or "podIdentity" in message:
        return "Tidal reads secretTargetRef, configMapTargetRef and env (docs/security.md)"
    return ""


# ---------------------------------------------------------------------- hints


_PARSER_HINTS: tuple[tuple[str, str], ...] = (
    ("must be less than MaxReplicaCount", "lower minReplicaCount or raise maxReplicaCount"),
    ("must be less than MinReplicaCount", "idleReplicaCount must be below minReplicaCount"),
    ("is defined multiple times", "give each trigger its own name"),
    ("has to be defined to use fallback", "add a trigger that is not cpu or memory"),
    ("characters long", "use a shorter name"),
    ("ScalingModifiers.Formula is mandatory", "add scalingModifiers.formula over trigger names"),
    ("formula is given but target is empty", "add scalingModifiers.target (a number > 0)"),
    ("invalid formula", "see the formula language in docs/scaling-modifiers.md"),
    ("behavior 'scalingModifiers'", "use static, currentReplicas or currentReplicasIfHigher"),
    ("'Utilization' metric type", "use metricType AverageValue or Value"),
    ("useCachedMetrics", "remove useCachedMetrics from this trigger"),
    ("no triggers defined", "add at least one trigger"),
)


def _from_parser(p: FieldProblem) -> Problem:
    hint = next((h for text, h in _PARSER_HINTS if text in p.message), "")
    return Problem(p.path, p.message, hint)


# Trigger types documented in a page of their own (the rest: docs/scalers.md).
_TRIGGER_DOCS = {
    "kafka": "docs/kafka.md",
    "nats-jetstream": "docs/nats.md",
    "aws-s3": "docs/s3.md",
    "aws-sqs-queue": "docs/aws-sqs.md",
    "postgresql": "docs/sql.md",
    "mysql": "docs/sql.md",
    "rabbitmq": "docs/rabbitmq.md",
    "external": "docs/external.md",
    "external-push": "docs/external.md",
    "http": "docs/http.md",
}


def _trigger_hint(trigger_type: str) -> str:
    page = _TRIGGER_DOCS.get(trigger_type, "docs/scalers.md")
    return f"see the {trigger_type} trigger's parameters in {page}"
