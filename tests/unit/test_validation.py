"""The validation core (scaler.validation): each KEDA rule, with KEDA's message and the field it
is about; what it can't see is never an error; and it says what the daemon says."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from scaler import validation
from scaler.admission import keep_hpa
from scaler.builder import build_triggers
from scaler.clients import ClientPool
from scaler.errors import ConfigError
from scaler.object_parser import parse_scaled_object, read_scaled_object
from scaler.objects import ScaledObject
from scaler.registry import default_registry
from scaler.runtime import close_scalers
from scaler.validation import (
    Known,
    Problem,
    check_scaled_object,
    check_trigger_auth,
    limit_range_defaults,
    positive_quantity,
)

JSON = dict[str, Any]
NS = "shop"


def so(name: str = "worker", target: str = "worker", **spec: Any) -> JSON:
    body: JSON = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "scaleTargetRef": {"name": target},
            "triggers": [redis()],
        },
    }
    body["spec"].update(spec)
    return body


def redis(**metadata: str) -> JSON:
    return {"type": "redis", "metadata": {"address": "redis:6379", "listName": "jobs", **metadata}}


def cpu(**metadata: str) -> JSON:
    return {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "50", **metadata}}


def edit(change: Callable[[JSON], None], body: JSON | None = None) -> JSON:
    body = copy.deepcopy(body or so())
    change(body)
    return body


def check(body: Mapping[str, Any], known: Known | None = None) -> list[Problem]:
    return asyncio.run(check_scaled_object(body, known or Known()))


def container(name: str = "app", requests: Mapping[str, str] | None = None, **extra: Any) -> JSON:
    c: JSON = {"name": name, **extra}
    if requests is not None:
        c["resources"] = {"requests": dict(requests)}
    return c


def workloads(*containers: JSON) -> Callable[[str, str, str, str], Sequence[JSON] | None]:
    def lookup(group: str, kind: str, namespace: str, name: str) -> Sequence[JSON] | None:
        return list(containers) if (group, kind, namespace) == ("apps", "Deployment", NS) else None

    return lookup


def parsed(body: JSON, created: float) -> ScaledObject:
    return replace(read_scaled_object(body)[0], creation_timestamp=created)


def hpa(name: str, target: str, **annotations: str) -> JSON:
    return hpa_in(NS, name, target, **annotations)


def hpa_in(namespace: str, name: str, target: str, **annotations: str) -> JSON:
    return keep_hpa(
        {
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target}
            },
        }
    )


def _set(path: str, value: Any) -> Callable[[JSON], None]:
    def change(body: JSON) -> None:
        node = body
        keys = path.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value

    return change


# (field, a part of the message): one problem, exactly.
SINGLE_OBJECT = [
    pytest.param(
        edit(_set("spec.minReplicaCount", 5), so(maxReplicaCount=2)),
        ("spec.minReplicaCount", "MinReplicaCount=5 must be less than MaxReplicaCount=2"),
        id="min-above-max",
    ),
    pytest.param(
        so(minReplicaCount=1, idleReplicaCount=1),
        ("spec.idleReplicaCount", "IdleReplicaCount=1 must be less than MinReplicaCount=1"),
        id="idle-not-below-min",
    ),
    pytest.param(
        so(triggers=[{**redis(), "name": "a"}, {**redis(listName="b"), "name": "a"}]),
        ("spec.triggers[1].name", "triggerName 'a' is defined multiple times"),
        id="trigger-names-unique",
    ),
    pytest.param(
        so(triggers=[cpu()], minReplicaCount=1, fallback={"failureThreshold": 3, "replicas": 2}),
        (
            "spec.fallback",
            "at least one trigger (that is not cpu or memory) has to be defined to use fallback",
        ),
        id="fallback-needs-an-external-trigger",
    ),
    pytest.param(
        so(fallback={"failureThreshold": -1, "replicas": 2}),
        ("spec.fallback.failureThreshold", "FailureThreshold=-1 & Replicas=2 must both be"),
        id="fallback-negative",
    ),
    pytest.param(
        so(name="x" * 64, advanced={"horizontalPodAutoscalerConfig": {"name": "short"}}),
        ("metadata.name", "is 64 characters long, but it must be at most 63"),
        id="name-too-long",
    ),
    pytest.param(
        so(name="x" * 55),
        ("metadata.name", "the HPA name 'keda-hpa-"),
        id="hpa-name-too-long",
    ),
    pytest.param(
        so(triggers=[cpu()]),
        (
            "spec.minReplicaCount",
            "scaledobject has only cpu/memory triggers AND minReplica is 0 "
            "(scale to zero doesn't work in this case)",
        ),
        id="cpu-only-min-0",
    ),
    pytest.param(
        so(triggers=[{"type": "memory", "metadata": {"value": "70"}}], minReplicaCount=0),
        ("spec.minReplicaCount", "only cpu/memory triggers AND minReplica is 0"),
        id="memory-only-min-0",
    ),
    pytest.param(
        so(triggers=[redis(listLength="abc")]),
        (
            "spec.triggers[0].metadata.listLength",
            "error parsing 'listLength': invalid value 'abc' (expected an integer)",
        ),
        id="metadata-does-not-parse",
    ),
    pytest.param(
        so(triggers=[{"type": "redis", "metadata": {"address": "redis:6379"}}]),
        ("spec.triggers[0].metadata.listName", "missing required parameter 'listName'"),
        id="metadata-missing-required",
    ),
    pytest.param(
        so(triggers=[{"type": "gcp-pubsub", "metadata": {"subscriptionName": "q"}}]),
        ("spec.triggers[0].type", "unknown trigger type 'gcp-pubsub'"),
        id="unknown-trigger-type",
    ),
    pytest.param(
        so(triggers=[cpu(type="Utilization")], minReplicaCount=1),
        ("spec.triggers[0].metadata.type", "parameter 'type' is deprecated"),
        id="deprecated-metadata",
    ),
    pytest.param(
        so(triggers=[{**cpu(), "useCachedMetrics": True}], minReplicaCount=1),
        ("spec.triggers[0].useCachedMetrics", "\"useCachedMetrics\" is not supported for 'cpu'"),
        id="cached-metrics-on-cpu",
    ),
    pytest.param(
        so(triggers=[{**redis(), "metricType": "Utilization"}]),
        ("spec.triggers[0].metricType", "'Utilization' metric type is unsupported"),
        id="utilization-on-external",
    ),
    pytest.param(
        so(advanced={"scalingModifiers": {"formula": "a + b", "target": "2"}}),
        ("spec.advanced.scalingModifiers.formula", "unknown name(s) a, b"),
        id="scaling-modifiers-formula-over-unnamed-triggers",
    ),
    pytest.param(
        so(advanced={"scalingModifiers": {"target": "2"}}),
        ("spec.advanced.scalingModifiers.formula", "ScalingModifiers.Formula is mandatory"),
        id="scaling-modifiers-without-formula",
    ),
    pytest.param(
        edit(_set("metadata.annotations", {"autoscaling.keda.sh/paused-replicas": "two"})),
        ("metadata.annotations", "invalid value 'two' for annotation"),
        id="paused-replicas-not-a-number",
    ),
    pytest.param(
        edit(_set("spec.scaleTargetRef", {"name": "w", "apiVersion": "a/b/c"})),
        ("spec.scaleTargetRef.apiVersion", "a/b/c"),
        id="bad-api-version",
    ),
]


@pytest.mark.parametrize(("body", "expected"), SINGLE_OBJECT)
def test_one_rule_one_problem(body: JSON, expected: tuple[str, str]) -> None:
    problems = check(body)
    assert [(p.field_path, expected[1] in p.message) for p in problems] == [(expected[0], True)], (
        problems
    )


WEBHOOK_ONLY = {"cpu-only-min-0", "memory-only-min-0"}  # KEDA's webhook rule; the daemon runs it


async def _daemon_problems(body: JSON) -> list[str]:
    """What the daemon reports for the object: its parser's problems, else its build's
    (scaler.builder `build_triggers`, the same registry), with the build's trigger prefix."""
    try:
        so_ = parse_scaled_object(body)
    except ConfigError as exc:
        return list(exc.problems)

    async def no_auth(kind: str, ns: str, name: str) -> None:
        return None

    async def no_data(kind: str, ns: str, name: str) -> None:
        return None

    try:
        built = await build_triggers(
            so_,
            registry=default_registry(),
            clients=ClientPool(),
            fetch=no_data,
            auth_lookup=no_auth,
            pod_spec=None,
            cluster_namespace="",
            timeout=1.0,
        )
    except ConfigError as exc:
        return [p.split("): ", 1)[-1] for p in exc.problems]
    await close_scalers(built)
    return []


@pytest.mark.parametrize(("body", "expected"), SINGLE_OBJECT)
def test_the_daemon_refuses_it_in_the_same_words(
    body: JSON, expected: tuple[str, str], request: pytest.FixtureRequest
) -> None:
    """Every message the daemon reports (parse, then build) is the check's, word for word; the
    webhook-only rules are the ones the daemon runs anyway."""
    messages = {p.message for p in check(body)}
    daemon = asyncio.run(_daemon_problems(body))
    if request.node.callspec.id in WEBHOOK_ONLY:
        assert daemon == []
    else:
        assert daemon
        assert set(daemon) <= messages


CLEAN = [
    pytest.param(so(), Known(), id="plain-redis"),
    pytest.param(
        so(triggers=[{"type": "redis", "metadata": {"addressFromEnv": "REDIS", "listName": "j"}}]),
        Known(),
        id="from-env-workload-unknown",
    ),
    pytest.param(
        so(triggers=[{"type": "redis", "metadata": {"addressFromEnv": "REDIS", "listName": "j"}}]),
        Known(workload=workloads(container(envFrom=[{"secretRef": {"name": "redis-env"}}]))),
        id="from-env-envfrom-unseen",
    ),
    pytest.param(
        so(triggers=[{"type": "redis", "metadata": {"addressFromEnv": "REDIS", "listName": "j"}}]),
        Known(
            workload=workloads(
                container(env=[{"name": "REDIS", "valueFrom": {"secretKeyRef": {"name": "s"}}}])
            )
        ),
        id="from-env-secret-unseen",
    ),
    pytest.param(
        so(triggers=[{**redis(), "authenticationRef": {"name": "redis-auth"}}]),
        Known(),
        id="auth-not-known-yet",
    ),
    pytest.param(
        so(
            triggers=[
                {
                    "type": "redis",
                    "metadata": {"listName": "j"},
                    "authenticationRef": {"name": "redis-auth"},
                }
            ]
        ),
        Known(
            auth_spec=lambda kind, ns, name: {
                "secretTargetRef": [{"parameter": "address", "name": "redis", "key": "address"}]
            }
        ),
        id="required-parameter-from-a-secret",
    ),
    pytest.param(
        so(triggers=[cpu()], minReplicaCount=1),
        Known(workload=workloads(container(requests={"cpu": "100m"}))),
        id="cpu-with-request",
    ),
    pytest.param(
        so(triggers=[cpu()], minReplicaCount=1),
        Known(
            workload=workloads(container(resources={"limits": {"cpu": "1"}})),
        ),
        id="cpu-with-limit",
    ),
    pytest.param(
        so(triggers=[cpu(containerName="app")], minReplicaCount=1),
        Known(workload=workloads(container(requests={"cpu": "1"}), container("sidecar"))),
        id="cpu-container-name-picks-one",
    ),
    pytest.param(
        so(triggers=[cpu()], minReplicaCount=1),
        Known(workload=workloads(container()), limit_defaults=lambda ns: _ready({"cpu"})),
        id="cpu-limitrange-default",
    ),
    pytest.param(
        so(triggers=[cpu()], minReplicaCount=1),
        Known(workload=workloads(container()), limit_defaults=lambda ns: _ready(None)),
        id="cpu-limitranges-unreadable",
    ),
    pytest.param(
        so(triggers=[redis(), cpu()], minReplicaCount=0),
        Known(workload=workloads(container(requests={"cpu": "1"}))),
        id="cpu-plus-external-min-0",
    ),
]


async def _value(value: frozenset[str] | None) -> frozenset[str] | None:
    return value


def _ready(names: set[str] | None) -> Any:
    return _value(None if names is None else frozenset(names))


@pytest.mark.parametrize(("body", "known"), CLEAN)
def test_clean(body: JSON, known: Known) -> None:
    assert check(body, known) == []


def test_env_var_the_known_container_does_not_set_is_the_daemons_error() -> None:
    """The workload is known and sets no REDIS_ADDRESS (no envFrom either): the build would find
    no address, and so does the check."""
    trigger = {"type": "redis", "metadata": {"addressFromEnv": "REDIS_ADDRESS", "listName": "j"}}
    env = [{"name": "OTHER", "value": "1"}]
    problems = check(so(triggers=[trigger]), Known(workload=workloads(container(env=env))))
    assert [p.field_path for p in problems] == ["spec.triggers[0].metadata"]
    assert problems[0].message.startswith("no address or host given")
    env = [{"name": "REDIS_ADDRESS", "value": "redis:6379"}]
    assert check(so(triggers=[trigger]), Known(workload=workloads(container(env=env)))) == []


def test_cpu_trigger_without_requests() -> None:
    body = so(triggers=[cpu(), {"type": "memory", "metadata": {"value": "60"}}], minReplicaCount=1)
    known = Known(workload=workloads(container(requests={"memory": "64Mi"}), container("side")))
    assert [(p.field_path, p.message) for p in check(body, known)] == [
        (
            "spec.triggers[0]",
            "the scaledobject has a cpu trigger but the container app doesn't have the cpu "
            "request defined",
        ),
        (
            "spec.triggers[0]",
            "the scaledobject has a cpu trigger but the container side doesn't have the cpu "
            "request defined",
        ),
        (
            "spec.triggers[1]",
            "the scaledobject has a memory trigger but the container side doesn't have the memory "
            "request defined",
        ),
    ]


OWNERSHIP = [
    pytest.param(
        so("second"),
        Known(scaled_objects=[parsed(so("first"), 1.0)]),
        (
            "spec.scaleTargetRef",
            "the workload 'worker' of type 'apps/v1.Deployment' is already managed by the "
            "ScaledObject 'first'",
        ),
        id="second-object-on-a-workload",
    ),
    pytest.param(
        so("web", target="web"),
        Known(hpas={(NS, "legacy"): hpa("legacy", "web")}),
        (
            "spec.scaleTargetRef",
            "the workload 'web' of type 'apps/v1.Deployment' is already managed by the hpa "
            "'legacy'",
        ),
        id="foreign-hpa",
    ),
    pytest.param(
        edit(
            _set("metadata.annotations", {"scaledobject.keda.sh/transfer-hpa-ownership": "true"}),
            so("web", target="web"),
        ),
        Known(hpas={(NS, "legacy"): hpa("legacy", "web")}),
        ("spec.scaleTargetRef", "is already managed by the hpa 'legacy'"),
        id="transfer-without-the-hpa-name",
    ),
    pytest.param(
        so("b", target="two", advanced={"horizontalPodAutoscalerConfig": {"name": "shared"}}),
        Known(
            scaled_objects=[
                parsed(
                    so(
                        "a",
                        target="one",
                        advanced={"horizontalPodAutoscalerConfig": {"name": "shared"}},
                    ),
                    1.0,
                )
            ]
        ),
        (
            "spec.advanced.horizontalPodAutoscalerConfig.name",
            "the HPA 'shared' is already managed by the ScaledObject 'a'",
        ),
        id="shared-hpa-name",
    ),
]


@pytest.mark.parametrize(("body", "known", "expected"), OWNERSHIP)
def test_ownership(body: JSON, known: Known, expected: tuple[str, str]) -> None:
    problems = check(body, known)
    assert [(p.field_path, expected[1] in p.message) for p in problems] == [(expected[0], True)]
    assert problems[0].hint


OWNERSHIP_CLEAN = [
    pytest.param(
        edit(_set("metadata.creationTimestamp", "2024-01-01T00:00:00Z"), so("first")),
        Known(scaled_objects=[parsed(so("second"), 2e9)]),
        id="the-oldest-keeps-its-workload",
    ),
    pytest.param(
        edit(
            _set("metadata.annotations", {"scaledobject.keda.sh/transfer-hpa-ownership": "true"}),
            so("web", target="web", advanced={"horizontalPodAutoscalerConfig": {"name": "legacy"}}),
        ),
        Known(hpas={(NS, "legacy"): hpa("legacy", "web")}),
        id="hpa-transferred",
    ),
    pytest.param(
        so("web", target="web"),
        Known(
            hpas={
                (NS, "legacy"): hpa(
                    "legacy", "web", **{"validations.keda.sh/hpa-ownership": "false"}
                )
            }
        ),
        id="hpa-ownership-check-off",
    ),
    pytest.param(
        so("web", target="web"),
        Known(hpas={("elsewhere", "legacy"): hpa_in("elsewhere", "legacy", "web")}),
        id="hpa-in-another-namespace",
    ),
]


@pytest.mark.parametrize(("body", "known"), OWNERSHIP_CLEAN)
def test_ownership_clean(body: JSON, known: Known) -> None:
    assert check(body, known) == []


AUTHS = [
    pytest.param(
        {"filePath": "/etc/creds"},
        ("spec.filePath", "authentication source 'filePath' is not supported by Tidal"),
        id="file-path",
    ),
    pytest.param(
        {"hashiCorpVault": {"address": "https://vault:8200"}},
        ("spec.hashiCorpVault", "'hashiCorpVault' is not supported by Tidal"),
        id="vault",
    ),
    pytest.param(
        {"podIdentity": {"provider": "azure-workload"}},
        ("spec.podIdentity.provider", "podIdentity provider 'azure-workload' is not supported"),
        id="pod-identity",
    ),
    pytest.param(
        {"podIdentity": {"provider": "none", "identityId": ""}},
        ("spec.podIdentity.identityId", "identityId of PodIdentity should not be empty"),
        id="empty-identity-id",
    ),
    pytest.param(
        {"secretTargetRef": [{"parameter": "password", "name": "redis"}]},
        ("spec.secretTargetRef[0]", "secretTargetRef[0] needs parameter, name and key"),
        id="secret-ref-without-key",
    ),
    pytest.param(
        {"secretTargets": []},
        ("spec.secretTargets", "unknown authentication source 'secretTargets'"),
        id="unknown-source",
    ),
]


@pytest.mark.parametrize("kind", ["TriggerAuthentication", "ClusterTriggerAuthentication"])
@pytest.mark.parametrize(("spec", "expected"), AUTHS)
def test_trigger_auth(spec: JSON, expected: tuple[str, str], kind: str) -> None:
    body = {"apiVersion": "keda.sh/v1alpha1", "kind": kind, "metadata": {"name": "a"}, "spec": spec}
    problems = asyncio.run(check_trigger_auth(body))
    assert [(p.field_path, expected[1] in p.message) for p in problems] == [(expected[0], True)]


def test_trigger_auth_clean_even_before_its_secret_exists() -> None:
    body = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": "a", "namespace": NS},
        "spec": {
            "secretTargetRef": [{"parameter": "password", "name": "redis", "key": "pw"}],
            "env": [{"parameter": "host", "name": "REDIS_HOST"}],
            "podIdentity": {"provider": "none"},
        },
    }
    assert asyncio.run(check_trigger_auth(body)) == []


@pytest.mark.parametrize(
    ("value", "positive"),
    [
        pytest.param("100m", True, id="milli"),
        pytest.param("0.5", True, id="fraction"),
        pytest.param("1Gi", True, id="binary-suffix"),
        pytest.param("0", False, id="zero"),
        pytest.param("0m", False, id="zero-milli"),
        pytest.param(None, False, id="absent"),
        pytest.param("", False, id="empty"),
    ],
)
def test_positive_quantity(value: object, positive: bool) -> None:
    assert positive_quantity(value) is positive


def test_limit_range_defaults_count_container_defaults_only() -> None:
    ranges = [
        {"spec": {"limits": [{"type": "Container", "defaultRequest": {"cpu": "100m"}}]}},
        {"spec": {"limits": [{"type": "Pod", "default": {"memory": "1Gi"}}]}},
        {"spec": {"limits": [{"type": "Container", "default": {"memory": "0"}}]}},
    ]
    assert limit_range_defaults(ranges) == frozenset({"cpu"})


@pytest.mark.parametrize(
    ("trigger_type", "page"),
    [
        pytest.param("redis", "docs/scalers.md", id="in-the-common-page"),
        pytest.param("kafka", "docs/kafka.md", id="kafka"),
        pytest.param("aws-sqs-queue", "docs/aws-sqs.md", id="aws-sqs"),
        pytest.param("external-push", "docs/external.md", id="external-push"),
    ],
)
def test_trigger_hints_point_at_the_page_documenting_the_trigger(
    trigger_type: str, page: str
) -> None:
    hint = validation._trigger_hint(trigger_type)
    assert hint.endswith(page)
    assert (Path(__file__).resolve().parents[2] / page).exists()
