"""Reading what the chart renders: objects by kind, RBAC rules, and the daemon's settings."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from scaler.commands.run_flags import settings_from_args
from scaler.errors import KubeError
from scaler.kube.client import MERGE_PATCH, KubeClient
from scaler.settings import Settings

Obj = dict[str, Any]
RBAC_KINDS = ("Role", "ClusterRole")
# Short leader-election timings for releases under test (the chart's defaults are 15s/10s/2s).
FAST_LEASE = {
    "leaderElection.leaseDuration": "3s",
    "leaderElection.renewDeadline": "2s",
    "leaderElection.retryPeriod": "500ms",
}


def parse(text: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all(text) if d]


def of_kind(objs: Iterable[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: Iterable[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in of_kind(objs, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(objs: Iterable[Obj]) -> Obj:
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    return dict(pod["containers"][0])


def rules(objs: Iterable[Obj]) -> list[tuple[str, str, Obj]]:
    """(kind, namespace, rule) of every Role and ClusterRole rule."""
    out = []
    for o in objs:
        if o["kind"] in RBAC_KINDS:
            for rule in o.get("rules") or []:
                out.append((o["kind"], o["metadata"].get("namespace", ""), rule))
    return out


def grants(objs: Iterable[Obj], group: str, resource: str, verb: str) -> list[tuple[str, str, Obj]]:
    """The rules that allow `verb` on `group/resource` (wildcards included)."""
    out = []
    for kind, ns, rule in rules(objs):
        groups, resources, verbs = (rule.get(k) or [] for k in ("apiGroups", "resources", "verbs"))
        if group in groups or "*" in groups:
            sub = resource.split("/", 1)[1] if "/" in resource else ""
            res_ok = resource in resources or "*" in resources or f"*/{sub}" in resources
            if res_ok and (verb in verbs or "*" in verbs):
                out.append((kind, ns, rule))
    return out


def chart_settings(
    objs: Iterable[Obj],
    *,
    pod_name: str,
    kubeconfig: Path,
    cert_dir: Path,
    api_port: int = 0,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """The settings `tidal run` gets in the chart's pod: its args, its env (the downward API's
    POD_NAME/POD_NAMESPACE/POD_IP filled in, the pod IP a loopback one), with loopback addresses
    and a kubeconfig instead of the in-cluster config."""
    objs = list(objs)
    c = container(objs)
    args = list(c["args"])
    assert args[0] == "run", args
    pod_env = {
        "POD_NAME": pod_name,
        "POD_NAMESPACE": one(objs, "Deployment")["metadata"]["namespace"],
        "POD_IP": "127.0.0.1",
    }
    for item in c.get("env") or []:
        if "value" in item:
            pod_env[item["name"]] = str(item["value"])
    settings = settings_from_args(args[1:], {**pod_env, **(env or {})})
    serve = dataclasses.replace(
        settings.serve,
        metrics_address="127.0.0.1:0",
        api_address=f"127.0.0.1:{api_port}",
        cert_dir=str(cert_dir),
    )
    return dataclasses.replace(settings, kubeconfig=str(kubeconfig), serve=serve)


def refused_in_logs(records: Iterable[logging.LogRecord]) -> list[str]:
    """Log records (message or structured fields) reporting an apiserver 403 for want of a
    permission ("... cannot <verb> ..."): a call Tidal made, was refused, and carried on from
    (a retried watch, a best-effort Event, a lease round). Other 403s (a write into a namespace
    being deleted) say nothing about Tidal's rights."""
    out = []
    for r in records:
        text = " ".join([r.getMessage(), *(str(v) for v in r.__dict__.values())])
        if "HTTP 403" in text and " cannot " in text:
            out.append(f"{r.name}: {r.getMessage()} {r.__dict__.get('error', '')}")
    return out


async def call_status(kube: KubeClient, method: str, path: str, body: object = None) -> int:
    """HTTP status of one call (200 for any success)."""
    content_type = MERGE_PATCH if method == "PATCH" else "application/json"
    try:
        await kube.request(method, path, body=body, content_type=content_type)
    except KubeError as exc:
        return int(exc.status or 0)
    return 200
