"""The CRDs in deploy/crds: they parse, are structural, and accept what KEDA accepts.

Applying them to a real kube-apiserver is done by the integration tests; here a small validator
for the schema subset used (type, required, enum, minimum, minLength, minItems, properties,
additionalProperties, preserve-unknown-fields) checks KEDA-style manifests against them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from scaler.contract import METRIC_TARGET_TYPES
from scaler.objects import AUTH_KINDS, FALLBACK_BEHAVIORS

CRDS = Path(__file__).resolve().parents[2] / "deploy" / "crds"
FILES = {
    "ScaledObject": "keda.sh_scaledobjects.yaml",
    "TriggerAuthentication": "keda.sh_triggerauthentications.yaml",
    "ClusterTriggerAuthentication": "keda.sh_clustertriggerauthentications.yaml",
}


def load(kind: str) -> dict[str, Any]:
    docs = list(yaml.safe_load_all((CRDS / FILES[kind]).read_text()))
    assert len(docs) == 1
    crd: dict[str, Any] = docs[0]
    return crd


def version(kind: str) -> dict[str, Any]:
    (v,) = load(kind)["spec"]["versions"]
    return v  # type: ignore[no-any-return]


def schema(kind: str) -> dict[str, Any]:
    return version(kind)["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- shape


@pytest.mark.parametrize(
    ("kind", "plural", "scope", "short"),
    [
        pytest.param("ScaledObject", "scaledobjects", "Namespaced", ["so", "scaledobj"], id="so"),
        pytest.param(
            "TriggerAuthentication",
            "triggerauthentications",
            "Namespaced",
            ["ta", "triggerauth"],
            id="ta",
        ),
        pytest.param(
            "ClusterTriggerAuthentication",
            "clustertriggerauthentications",
            "Cluster",
            ["cta", "clustertriggerauth"],
            id="cta",
        ),
    ],
)
def test_names_scope_and_version(kind: str, plural: str, scope: str, short: list[str]) -> None:
    crd = load(kind)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{plural}.keda.sh"
    spec = crd["spec"]
    assert spec["group"] == "keda.sh"
    assert spec["scope"] == scope
    assert spec["names"]["kind"] == kind
    assert spec["names"]["plural"] == plural
    assert spec["names"]["listKind"] == f"{kind}List"
    assert spec["names"]["shortNames"] == short
    v = version(kind)
    assert (v["name"], v["served"], v["storage"]) == ("v1alpha1", True, True)
    assert v["subresources"] == {"status": {}}


def test_scaled_object_printer_columns() -> None:
    columns = [
        (c["name"], c["type"], c["jsonPath"])
        for c in version("ScaledObject")["additionalPrinterColumns"]
    ]
    assert [c[0] for c in columns] == [
        "ScaleTargetKind",
        "ScaleTargetName",
        "Min",
        "Max",
        "Ready",
        "Active",
        "Fallback",
        "Paused",
        "Triggers",
        "Authentications",
        "Age",
    ]
    paths = {name: path for name, _, path in columns}
    assert paths["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert paths["ScaleTargetName"] == ".spec.scaleTargetRef.name"
    assert paths["Triggers"] == ".status.triggersTypes"
    assert paths["Age"] == ".metadata.creationTimestamp"
    assert dict((n, t) for n, t, _ in columns)["Min"] == "integer"


def _walk(node: dict[str, Any], path: str) -> list[str]:
    """Problems that make a schema non-structural (the subset of rules that matter here)."""
    problems: list[str] = []
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if "type" not in node and not preserve and not node.get("x-kubernetes-int-or-string"):
        problems.append(f"{path}: no type")
    if "properties" in node and node.get("type") != "object":
        problems.append(f"{path}: properties on a non-object")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties together")
    if node.get("type") == "array" and "items" not in node:
        problems.append(f"{path}: array without items")
    for key, child in node.get("properties", {}).items():
        problems += _walk(child, f"{path}.{key}")
    if isinstance(node.get("additionalProperties"), dict):
        problems += _walk(node["additionalProperties"], f"{path}[*]")
    if "items" in node:
        problems += _walk(node["items"], f"{path}[]")
    return problems


@pytest.mark.parametrize("kind", [pytest.param(k, id=k) for k in FILES])
def test_schemas_are_structural(kind: str) -> None:
    root = schema(kind)
    assert _walk(root, kind) == []
    assert root["properties"]["metadata"] == {"type": "object"}
    assert "status" in root["properties"]


def test_trigger_authentication_kinds_share_one_spec() -> None:
    ta = schema("TriggerAuthentication")["properties"]["spec"]
    cta = schema("ClusterTriggerAuthentication")["properties"]["spec"]
    assert ta == cta
    assert set(ta["properties"]) >= {
        "podIdentity",
        "secretTargetRef",
        "configMapTargetRef",
        "env",
        "hashiCorpVault",
        "azureKeyVault",
        "gcpSecretManager",
        "awsSecretManager",
        "boundServiceAccountToken",
        "oauth2",
        "filePath",
    }


def so_spec() -> dict[str, Any]:
    return schema("ScaledObject")["properties"]["spec"]  # type: ignore[no-any-return]


def test_enums_match_what_the_parser_accepts() -> None:
    spec = so_spec()["properties"]
    trigger = spec["triggers"]["items"]["properties"]
    assert tuple(trigger["metricType"]["enum"]) == METRIC_TARGET_TYPES
    assert tuple(trigger["authenticationRef"]["properties"]["kind"]["enum"]) == AUTH_KINDS
    behavior = spec["fallback"]["properties"]["behavior"]
    assert behavior["enum"] == [*FALLBACK_BEHAVIORS, "scalingModifiers"]
    assert behavior["default"] == "static"


def test_scaled_object_validations() -> None:
    spec = so_spec()
    props = spec["properties"]
    assert props["triggers"]["minItems"] == 1
    assert props["pollingInterval"]["minimum"] == 1
    assert props["maxReplicaCount"]["minimum"] == 1
    for key in ("cooldownPeriod", "initialCooldownPeriod", "minReplicaCount", "idleReplicaCount"):
        assert props[key]["minimum"] == 0, key
    assert props["scaleTargetRef"]["properties"]["name"]["minLength"] == 1
    assert props["fallback"]["required"] == ["failureThreshold", "replicas"]
    rules = [v["message"] for v in spec["x-kubernetes-validations"]]
    assert rules == [
        "minReplicaCount must be less than or equal to maxReplicaCount",
        "idleReplicaCount must be less than minReplicaCount",
    ]


# --------------------------------------------------------------------------- manifests


def validate(node: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Check `value` against the schema subset the CRDs use (not CEL)."""
    types = {"object": dict, "array": list, "string": str, "boolean": bool}
    kind = node.get("type")
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return [f"{path}: not an integer"]
    elif kind in types and not isinstance(value, types[kind]):
        return [f"{path}: not a {kind}"]
    problems: list[str] = []
    if "enum" in node and value not in node["enum"]:
        problems.append(f"{path}: {value!r} not in enum")
    if "minimum" in node and value < node["minimum"]:
        problems.append(f"{path}: below minimum")
    if "minLength" in node and len(value) < node["minLength"]:
        problems.append(f"{path}: too short")
    if "minItems" in node and len(value) < node["minItems"]:
        problems.append(f"{path}: too few items")
    if kind == "object" and isinstance(value, dict):
        problems += [f"{path}.{r}: required" for r in node.get("required", []) if r not in value]
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        for key, child in value.items():
            if key in props:
                problems += validate(props[key], child, f"{path}.{key}")
            elif isinstance(extra, dict):
                problems += validate(extra, child, f"{path}.{key}")
            elif props and not node.get("x-kubernetes-preserve-unknown-fields"):
                problems.append(f"{path}.{key}: unknown field (pruned)")
    if kind == "array" and isinstance(value, list):
        for i, item in enumerate(value):
            problems += validate(node["items"], item, f"{path}[{i}]")
    return problems


KEDA_SO = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: orders, namespace: shop}
spec:
  scaleTargetRef: {name: orders-worker}
  pollingInterval: 5
  cooldownPeriod: 60
  minReplicaCount: 0
  maxReplicaCount: 20
  fallback: {failureThreshold: 3, replicas: 4, behavior: currentReplicasIfHigher}
  advanced:
    restoreToOriginalReplicaCount: true
    horizontalPodAutoscalerConfig:
      name: orders-hpa
      behavior:
        scaleDown:
          stabilizationWindowSeconds: 30
          policies: [{type: Percent, value: 50, periodSeconds: 15}]
  triggers:
    - type: redis
      name: queue
      metadata: {address: "redis:6379", listName: orders, listLength: "5"}
      authenticationRef: {name: redis-auth}
    - type: cpu
      metricType: Utilization
      metadata: {value: "60"}
"""

KEDA_TA = """
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: redis-auth, namespace: shop}
spec:
  secretTargetRef:
    - {parameter: password, name: redis-secret, key: password}
  env:
    - {parameter: host, name: REDIS_HOST}
  hashiCorpVault:
    address: https://vault:8200
    authentication: token
    credential: {token: abc}
    secrets: [{parameter: username, key: user, path: secret/data/redis}]
"""


def test_a_keda_scaled_object_is_valid() -> None:
    manifest = yaml.safe_load(KEDA_SO)
    assert validate(schema("ScaledObject"), manifest) == []


@pytest.mark.parametrize("kind", [pytest.param(k, id=k) for k in FILES if "Trigger" in k])
def test_a_keda_trigger_authentication_is_valid(kind: str) -> None:
    manifest = yaml.safe_load(KEDA_TA)
    manifest["kind"] = kind
    assert validate(schema(kind), manifest) == []


@pytest.mark.parametrize(
    ("patch", "problem"),
    [
        pytest.param({"triggers": []}, ".spec.triggers: too few items", id="no-triggers"),
        pytest.param({"pollingInterval": 0}, ".spec.pollingInterval: below minimum", id="poll-0"),
        pytest.param({"minReplicaCount": -1}, ".spec.minReplicaCount: below minimum", id="min-neg"),
        pytest.param(
            {"scaleTargetRef": {"name": ""}}, ".spec.scaleTargetRef.name: too short", id="no-name"
        ),
        pytest.param(
            {"triggers": [{"type": "redis", "metadata": {}, "metricType": "Average"}]},
            ".spec.triggers[0].metricType: 'Average' not in enum",
            id="metric-type",
        ),
        pytest.param(
            {"triggers": [{"type": "redis", "metadata": {"n": 5}}]},
            ".spec.triggers[0].metadata.n: not a string",
            id="metadata-int",
        ),
        pytest.param(
            {"fallback": {"failureThreshold": 1, "replicas": 1, "behavior": "never"}},
            ".spec.fallback.behavior: 'never' not in enum",
            id="fallback-behavior",
        ),
        pytest.param(
            {"fallback": {"replicas": 1}},
            ".spec.fallback.failureThreshold: required",
            id="fallback-threshold",
        ),
        pytest.param(
            {
                "triggers": [
                    {
                        "type": "redis",
                        "metadata": {},
                        "authenticationRef": {"name": "a", "kind": "Secret"},
                    }
                ]
            },
            ".spec.triggers[0].authenticationRef.kind: 'Secret' not in enum",
            id="auth-kind",
        ),
    ],
)
def test_invalid_scaled_objects_are_rejected(patch: dict[str, Any], problem: str) -> None:
    manifest = yaml.safe_load(KEDA_SO)
    manifest["spec"].update(patch)
    assert problem in validate(schema("ScaledObject"), manifest)
