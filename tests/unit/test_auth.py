"""TriggerAuthentication resolution and container env resolution.

The resolvers take the Kubernetes read as a `fetch` callable (their input, not a component):
these tests pass decoded Secret/ConfigMap data directly. The kube-backed fetch itself belongs to
scaler/kube and is exercised against the real API server there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from scaler.auth import ObjectKind, resolve_auth_params, resolve_container_env
from scaler.errors import ConfigError, KubeError, UnsupportedError

OBJECTS: dict[tuple[str, str, str], dict[str, str]] = {
    ("Secret", "app", "redis"): {"password": "hunter2", "user": "svc"},
    ("Secret", "keda", "shared"): {"token": "cluster-token"},
    ("ConfigMap", "app", "settings"): {"host": "redis.app:6379", "LEVEL": "debug"},
}


class Reads:
    """Records every read so tests can check each object is fetched once."""

    def __init__(self, objects: Mapping[tuple[str, str, str], dict[str, str]] = OBJECTS) -> None:
        self.objects = objects
        self.calls: list[tuple[str, str, str]] = []

    async def __call__(self, kind: ObjectKind, namespace: str, name: str) -> dict[str, str] | None:
        self.calls.append((kind, namespace, name))
        if name == "forbidden":
            raise KubeError("forbidden", status=403)
        if name == "gone":
            raise KubeError("not found", status=404)
        return self.objects.get((kind, namespace, name))


async def test_secret_configmap_and_env_sources() -> None:
    reads = Reads()
    spec = {
        "secretTargetRef": [
            {"parameter": "password", "name": "redis", "key": "password"},
            {"parameter": "username", "name": "redis", "key": "user"},
        ],
        "configMapTargetRef": [{"parameter": "address", "name": "settings", "key": "host"}],
        "env": [{"parameter": "region", "name": "AWS_REGION"}],
        "podIdentity": {"provider": "none"},
    }
    params = await resolve_auth_params(
        spec, namespace="app", env={"AWS_REGION": "eu-west-1"}, fetch=reads
    )
    assert params == {
        "password": "hunter2",
        "username": "svc",
        "address": "redis.app:6379",
        "region": "eu-west-1",
    }
    assert reads.calls.count(("Secret", "app", "redis")) == 1


async def test_cluster_trigger_authentication_reads_the_cluster_namespace() -> None:
    spec = {"secretTargetRef": [{"parameter": "bearerToken", "name": "shared", "key": "token"}]}
    params = await resolve_auth_params(
        spec,
        namespace="app",
        env={},
        fetch=Reads(),
        kind="ClusterTriggerAuthentication",
        cluster_namespace="keda",
    )
    assert params == {"bearerToken": "cluster-token"}


async def test_env_entry_can_name_another_container() -> None:
    spec = {"env": [{"parameter": "p", "name": "X", "containerName": "sidecar"}]}
    params = await resolve_auth_params(
        spec,
        namespace="app",
        env={"X": "main"},
        fetch=Reads(),
        container_envs={"sidecar": {"X": "side"}},
    )
    assert params == {"p": "side"}


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        pytest.param(
            {"secretTargetRef": [{"parameter": "p", "name": "missing", "key": "k"}]},
            "Secret 'app/missing' not found (secretTargetRef[0])",
            id="secret-missing",
        ),
        pytest.param(
            {"secretTargetRef": [{"parameter": "p", "name": "gone", "key": "k"}]},
            "Secret 'app/gone' not found (secretTargetRef[0])",
            id="secret-404",
        ),
        pytest.param(
            {"secretTargetRef": [{"parameter": "p", "name": "redis", "key": "nokey"}]},
            "Secret 'app/redis' has no key 'nokey'",
            id="secret-key-missing",
        ),
        pytest.param(
            {"configMapTargetRef": [{"parameter": "p", "name": "settings", "key": "x"}]},
            "ConfigMap 'app/settings' has no key 'x'",
            id="configmap-key-missing",
        ),
        pytest.param(
            {"secretTargetRef": [{"parameter": "p", "name": "redis"}]},
            "secretTargetRef[0] needs parameter, name and key",
            id="ref-incomplete",
        ),
        pytest.param(
            {"env": [{"parameter": "p", "name": "NOT_SET"}]},
            "env[0]: variable 'NOT_SET' is not set in the container's env",
            id="env-missing",
        ),
        pytest.param({"magic": {}}, "unknown authentication source 'magic'", id="unknown-source"),
    ],
)
async def test_problems_name_the_object_and_key_never_the_value(
    spec: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        await resolve_auth_params(spec, namespace="app", env={}, fetch=Reads())
    assert info.value.problems == (problem,)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        pytest.param({"podIdentity": {"provider": "aws"}}, "podIdentity provider 'aws'", id="aws"),
        pytest.param(
            {"podIdentity": {"provider": "azure-workload"}},
            "podIdentity provider 'azure-workload'",
            id="azure",
        ),
        pytest.param({"hashiCorpVault": {"address": "x"}}, "'hashiCorpVault'", id="vault"),
        pytest.param({"azureKeyVault": {"vaultUri": "x"}}, "'azureKeyVault'", id="akv"),
        pytest.param({"gcpSecretManager": {"secrets": []}}, "'gcpSecretManager'", id="gcp"),
        pytest.param({"awsSecretManager": {"secrets": []}}, "'awsSecretManager'", id="aws-sm"),
        pytest.param({"filePath": "/etc/passwd"}, "never reads files", id="file-path"),
        pytest.param(
            {"boundServiceAccountToken": [{"parameter": "t", "serviceAccountName": "s"}]},
            "'boundServiceAccountToken'",
            id="bsat",
        ),
        pytest.param({"oauth2": {"type": "clientCredentials"}}, "'oauth2'", id="oauth2"),
    ],
)
async def test_unsupported_sources_are_named(spec: dict[str, Any], fragment: str) -> None:
    reads = Reads()
    with pytest.raises(UnsupportedError) as info:
        await resolve_auth_params(spec, namespace="app", env={}, fetch=reads)
    assert fragment in str(info.value)
    assert reads.calls == []


async def test_transient_fetch_failures_propagate() -> None:
    spec = {"secretTargetRef": [{"parameter": "p", "name": "forbidden", "key": "k"}]}
    with pytest.raises(KubeError):
        await resolve_auth_params(spec, namespace="app", env={}, fetch=Reads())


async def test_cluster_kind_without_namespace_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cluster object namespace"):
        await resolve_auth_params(
            {}, namespace="app", env={}, fetch=Reads(), kind="ClusterTriggerAuthentication"
        )


POD_SPEC: dict[str, Any] = {
    "containers": [
        {
            "name": "main",
            "envFrom": [
                {"configMapRef": {"name": "settings"}, "prefix": "CFG_"},
                {"secretRef": {"name": "redis"}},
                {"secretRef": {"name": "absent", "optional": True}},
            ],
            "env": [
                {"name": "LITERAL", "value": "plain"},
                {"name": "EXPANDED", "value": "$(LITERAL)-$(UNKNOWN)-$$(LITERAL)"},
                {
                    "name": "REDIS_PASSWORD",
                    "valueFrom": {"secretKeyRef": {"name": "redis", "key": "password"}},
                },
                {
                    "name": "HOST",
                    "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "host"}},
                },
                {
                    "name": "OPT",
                    "valueFrom": {"secretKeyRef": {"name": "redis", "key": "x", "optional": True}},
                },
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "user", "value": "overridden"},
            ],
        },
        {"name": "sidecar", "env": [{"name": "SIDE", "value": "1"}]},
    ]
}


async def test_container_env_like_the_kubelet() -> None:
    env = await resolve_container_env(POD_SPEC, "app", Reads())
    assert env == {
        "CFG_host": "redis.app:6379",
        "CFG_LEVEL": "debug",
        "password": "hunter2",
        "user": "overridden",
        "LITERAL": "plain",
        "EXPANDED": "plain-$(UNKNOWN)-$(LITERAL)",
        "REDIS_PASSWORD": "hunter2",
        "HOST": "redis.app:6379",
    }


async def test_container_env_of_a_named_container() -> None:
    assert await resolve_container_env(POD_SPEC, "app", Reads(), "sidecar") == {"SIDE": "1"}
    with pytest.raises(ConfigError, match="container 'nope' not found"):
        await resolve_container_env(POD_SPEC, "app", Reads(), "nope")


async def test_container_env_missing_required_references() -> None:
    spec = {
        "containers": [
            {
                "name": "c",
                "envFrom": [{"secretRef": {"name": "absent"}}],
                "env": [
                    {"name": "X", "valueFrom": {"secretKeyRef": {"name": "redis", "key": "k"}}}
                ],
            }
        ]
    }
    with pytest.raises(ConfigError) as info:
        await resolve_container_env(spec, "app", Reads())
    assert info.value.problems == (
        "Secret 'app/absent' not found (envFrom)",
        "Secret 'app/redis' has no key 'k' (env X)",
    )
