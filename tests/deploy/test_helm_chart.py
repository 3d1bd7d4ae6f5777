"""The Helm chart: lint, what it renders, the files rendered from it, a server-side dry run."""

from __future__ import annotations

import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from localenv.controlplane import ControlPlane
from localenv.helm import (
    CHART,
    MANIFESTS,
    NAMESPACE,
    expected_files,
    helm,
    set_args,
    stale_files,
    template,
)
from localenv.paths import REPO, k8s_bin
from scaler.commands.run_flags import settings_from_args
from tests.deploy.chart import Obj, chart_settings, container, grants, of_kind, one, parse, rules

# Value sets every test below renders. `dry_run`: the cluster has every kind they render (the
# local apiserver has no cert-manager or prometheus-operator CRDs).
VALUE_SETS = [
    pytest.param({}, True, id="defaults"),
    pytest.param({"replicaCount": 1}, True, id="one-replica-no-leader-election"),
    pytest.param(
        {"watch.namespace": "@ns", "clusterObjectNamespace": "kube-public"}, True, id="namespaced"
    ),
    pytest.param(
        {"metricsApi.authorization": "none", "metricsApi.apiService.create": False},
        True,
        id="no-apiservice-no-authz",
    ),
    pytest.param({"dashboard.enabled": True, "podAntiAffinity": "hard"}, True, id="dashboard"),
    pytest.param({"shards.mode": "auto", "replicaCount": 3}, True, id="sharded"),
    pytest.param({"certManager.enabled": True}, False, id="cert-manager"),
    pytest.param({"metrics.serviceMonitor.enabled": True}, False, id="servicemonitor"),
]


def _resolve(values: dict[str, object], namespace: str) -> dict[str, object]:
    return {k: namespace if v == "@ns" else v for k, v in values.items()}


def _render(values: dict[str, object], namespace: str = NAMESPACE) -> list[Obj]:
    return parse(template(_resolve(values, namespace), namespace=namespace))


@pytest.mark.parametrize(("values", "dry_run"), VALUE_SETS)
def test_helm_lint_is_clean(values: dict[str, object], dry_run: bool) -> None:
    out = helm("lint", "--strict", CHART, *set_args(_resolve(values, "apps")))
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    assert "[WARNING]" not in out, out
    assert "[ERROR]" not in out, out


def test_manifests_and_chart_copies_are_rendered_from_their_sources() -> None:
    """deploy/manifests/tidal.yaml is `helm template` of the chart; the chart's crds/ and
    dashboard are copies of deploy/crds and deploy/grafana. Fix drift with `make manifests`."""
    for path, content in expected_files().items():
        rel = path.relative_to(REPO)
        assert path.exists(), f"{rel} is missing: run `make manifests`"
        assert path.read_bytes() == content, f"{rel} differs from its source: run `make manifests`"
    assert stale_files() == [], "files no source produces: run `make manifests`"
    assert sorted(p.name for p in MANIFESTS.iterdir()) == ["tidal.yaml"]


def test_the_packaged_chart_carries_its_crds_and_dashboard(tmp_path: Path) -> None:
    """`helm package` makes a self-contained archive (copies, not links out of the chart)."""
    helm("package", CHART, "--destination", tmp_path)
    (archive,) = tmp_path.glob("tidal-*.tgz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        dashboard = tar.extractfile("tidal/files/tidal-dashboard.json")
        assert dashboard is not None
        assert dashboard.read() == (CHART / "files" / "tidal-dashboard.json").read_bytes()
    crds = {f"tidal/crds/{p.name}" for p in (REPO / "deploy" / "crds").glob("*.yaml")}
    assert crds <= names
    assert "tidal/values.schema.json" in names


def test_bad_values_are_refused_by_the_schema() -> None:
    for values in ({"log.level": "loud"}, {"replicaCount": "two"}, {"nosuchkey": 1}):
        with pytest.raises(RuntimeError, match="schema"):
            template(values)


@pytest.mark.parametrize(("values", "dry_run"), VALUE_SETS)
def test_deployment_args_are_flags_tidal_accepts(
    values: dict[str, object], dry_run: bool, tmp_path: Path
) -> None:
    """What the pod runs parses as `tidal run` parses it, to the settings the values ask for."""
    objs = _render(values, "tidal-ns")
    s = chart_settings(objs, pod_name="tidal-abc", kubeconfig=tmp_path / "kc", cert_dir=tmp_path)
    sharded = values.get("shards.mode") == "auto"
    assert s.shards.enabled is sharded
    assert s.leader.enabled is (values.get("replicaCount", 2) != 1 and not sharded)
    if sharded:  # every replica active: member Leases beside the leader Lease's name
        assert (s.leader.name, s.shards.peer_address) == ("tidal-leader", "0.0.0.0:6444")
        assert s.shards.advertise == "127.0.0.1:6444"  # $POD_IP from the downward API
    assert s.leader.identity == "tidal-abc"
    assert s.leader.namespace == "tidal-ns"
    assert s.watch.namespace == ("tidal-ns" if "watch.namespace" in values else "")
    assert s.watch.cluster_object_namespace == values.get("clusterObjectNamespace", "tidal-ns")
    assert s.serve.metrics_authorization == values.get("metricsApi.authorization", "delegated")
    if values.get("certManager.enabled"):
        assert not s.serve.cert_secret
        assert s.serve.tls_cert_file == "/etc/tidal/tls/tls.crt"
    else:
        assert s.serve.cert_secret == "tidal-ns/tidal-certs"
        assert s.serve.cert_service == "tidal-ns/tidal-metrics-api"
        create = values.get("metricsApi.apiService.create", True)
        assert s.serve.cert_apiservice == ("v1beta1.external.metrics.k8s.io" if create else "")
    strategy = one(objs, "Deployment")["spec"].get("strategy", {}).get("type", "RollingUpdate")
    assert strategy == ("RollingUpdate" if s.leader.enabled or sharded else "Recreate")


def test_pod_runs_non_root_read_only_without_capabilities() -> None:
    objs = _render({})
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    c = container(objs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    # The only writable place: /tmp, in memory, where --cert-dir points.
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"][0]["emptyDir"]["medium"] == "Memory"
    assert "--cert-dir=/tmp" in c["args"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["metrics"]
    assert f"--metrics-address=0.0.0.0:{port}" in c["args"]


def test_cert_manager_mode_wires_certificate_secret_and_ca_injection() -> None:
    objs = _render({"certManager.enabled": True})
    api = one(objs, "APIService")
    serving = one(objs, "Certificate", "tidal-serving")
    assert api["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{NAMESPACE}/tidal-serving"
    )
    svc = api["spec"]["service"]
    assert f"{svc['name']}.{svc['namespace']}.svc" in serving["spec"]["dnsNames"]
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "serving-cert")
    assert volume["secret"]["secretName"] == serving["spec"]["secretName"]
    assert (
        serving["spec"]["issuerRef"]["name"] == one(objs, "Issuer", "tidal-ca")["metadata"]["name"]
    )
    args = container(objs)["args"]
    assert not [a for a in args if a.startswith("--cert-secret")]
    # cert-manager writes the Secret and the caBundle: Tidal gets no right to either.
    assert not of_kind(objs, "Secret")
    assert not grants(objs, "", "secrets", "update")
    assert not grants(objs, "apiregistration.k8s.io", "apiservices", "patch")


def test_dashboard_configmap_carries_the_dashboard_and_the_sidecar_label() -> None:
    objs = _render({"dashboard.enabled": True})
    cm = one(objs, "ConfigMap", "tidal-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    copy = CHART / "files" / "tidal-dashboard.json"  # of deploy/grafana's: see the drift test
    assert cm["data"]["tidal-dashboard.json"] == copy.read_text().rstrip("\n")
    assert not of_kind(_render({}), "ConfigMap")


def test_service_monitor_scrapes_the_metrics_service() -> None:
    objs = _render({"metrics.serviceMonitor.enabled": True})
    monitor = one(objs, "ServiceMonitor")
    service = one(objs, "Service", "tidal-metrics")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def test_sharding_needs_the_managed_certificates() -> None:
    with pytest.raises(RuntimeError, match=r"shards\.mode auto needs Tidal's managed certificates"):
        template({"shards.mode": "auto", "certManager.enabled": True})


def test_pdb_only_with_more_than_one_replica() -> None:
    assert one(_render({}), "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert not of_kind(_render({"replicaCount": 1}), "PodDisruptionBudget")


def test_no_insecure_skip_tls_verify_anywhere_in_deploy() -> None:
    hits = [
        p.relative_to(REPO)
        for p in (REPO / "deploy").rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and b"insecureSkipTLSVerify" in p.read_bytes()
    ]
    assert hits == []
    api = one(_render({}), "APIService")
    assert "insecureSkipTLSVerify" not in api["spec"]


def test_rbac_drops_what_nothing_uses() -> None:
    """Rights the code never exercises are not granted (each rule's comment names its user)."""
    for values in ({}, {"watch.namespace": "apps"}):
        objs = _render(values)
        for verb in ("update", "patch", "create", "delete"):
            assert not grants(objs, "keda.sh", "triggerauthentications", verb)
            assert not grants(objs, "keda.sh", "clustertriggerauthentications", verb)
        assert not grants(objs, "keda.sh", "triggerauthentications/status", "patch")
        assert not grants(objs, "keda.sh", "scaledobjects", "update")
        assert not grants(objs, "apps", "deployments/scale", "update")
        assert not grants(objs, "apps", "deployments", "get")
        assert not grants(objs, "autoscaling", "horizontalpodautoscalers", "patch")
        assert not grants(objs, "", "secrets", "delete")
        for kind, ns, rule in rules(objs):
            assert "*" not in rule["verbs"]
            if "leases" in rule.get("resources", []):
                assert (kind, ns) == ("Role", NAMESPACE)
            if "nonResourceURLs" in rule:  # Tidal's own discovery: system:discovery has it
                assert rule == {
                    "nonResourceURLs": [
                        "/apis/external.metrics.k8s.io",
                        "/apis/external.metrics.k8s.io/v1beta1",
                    ],
                    "verbs": ["get"],
                }
        # ... granted to the aggregator's discovery identity, not to Tidal.
        binding = one(objs, "ClusterRoleBinding", "tidal-aggregator-discovery")
        assert binding["subjects"] == [
            {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "User",
                "name": "system:kube-aggregator",
            }
        ]
        # Lease and Secret writes: the release namespace only, by name except create.
        for _, _, rule in grants(objs, "coordination.k8s.io", "leases", "update"):
            assert rule["resourceNames"] == ["tidal-leader"]
        for kind, ns, rule in grants(objs, "", "secrets", "update"):
            assert (kind, ns, rule["resourceNames"]) == ("Role", NAMESPACE, ["tidal-certs"])
        (_, _, api) = grants(objs, "apiregistration.k8s.io", "apiservices", "patch")[0]
        assert api["resourceNames"] == ["v1beta1.external.metrics.k8s.io"]
    namespaced = _render({"watch.namespace": "apps"})
    assert sorted((k, ns) for k, ns, _ in grants(namespaced, "", "secrets", "get")) == [
        ("Role", "apps"),
        ("Role", NAMESPACE),  # the release namespace: ClusterTriggerAuthentication Secrets
        ("Role", NAMESPACE),  # the managed certificate's own Secret
    ]
    assert not grants(
        _render({"metricsApi.authorization": "none"}),
        "authorization.k8s.io",
        "subjectaccessreviews",
        "create",
    )


def test_rbac_comments_name_code_that_exists() -> None:
    """Every rule comes with a comment naming the code path that needs it (its own, its
    document's, or the one of the rule before it on the same resources), and the files and
    names those comments cite exist."""
    text = (CHART / "templates" / "rbac.yaml").read_text()
    refs = re.findall(r"((?:scaler|metrics_api)/[\w/]+\.py)(?: (\w+))?", text)
    assert len(refs) >= 12
    for path, name in refs:
        source = REPO / path
        assert source.exists(), path
        if name and name not in ("through", "from"):
            assert re.search(rf"\b{name}\b", source.read_text()), f"{name} not in {path}"
    lines = text.splitlines()
    doc_comment, previous = "", ""
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped == "---":
            doc_comment, previous = "", ""
        elif stripped.startswith("#") and not line.startswith(" "):
            doc_comment += stripped
        if not stripped.startswith("- apiGroups:"):
            continue
        resources = lines[i + 1].strip()
        above = lines[i - 1].strip()
        commented = above.startswith("#")
        by_document = above == "rules:" and re.search(r"(scaler|metrics_api)/", doc_comment)
        continuation = resources == previous
        assert commented or by_document or continuation, (
            f"rule without a reason: {lines[i : i + 3]}"
        )
        previous = resources


def _kubectl_dry_run(kubeconfig: Path, manifest: str) -> str:
    proc = subprocess.run(
        [
            str(k8s_bin("kubectl")),
            "--kubeconfig",
            str(kubeconfig),
            "apply",
            "--dry-run=server",
            "-f",
            "-",
        ],
        input=manifest,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize(("values", "dry_run"), [p for p in VALUE_SETS if p.values[1]])
def test_rendered_chart_passes_server_side_dry_run(
    values: dict[str, object], dry_run: bool, control_plane: ControlPlane, namespace: str
) -> None:
    """`helm template --include-crds | kubectl apply --dry-run=server`: the apiserver's own
    validation and admission accept every object."""
    manifest = template(_resolve(values, namespace), namespace=namespace, extra=["--include-crds"])
    out = _kubectl_dry_run(control_plane.kubeconfig, manifest)
    rendered = parse(manifest)
    assert out.count("(server dry run)") == len(rendered), out


def test_plain_manifests_pass_server_side_dry_run(control_plane: ControlPlane) -> None:
    """The documented plain install: deploy/crds, then deploy/manifests/tidal.yaml (its objects
    live in tidal-system, which a dry run cannot create: it is made for real first)."""
    control_plane.apply(
        f"/api/v1/namespaces/{NAMESPACE}",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
    )
    crds = "".join(
        f"---\n{p.read_text()}" for p in sorted((REPO / "deploy" / "crds").glob("*.yaml"))
    )
    manifest = (MANIFESTS / "tidal.yaml").read_text()
    out = _kubectl_dry_run(control_plane.kubeconfig, crds + "---\n" + manifest)
    assert out.count("(server dry run)") == len(parse(crds)) + len(parse(manifest)), out
    s = settings_from_args(container(parse(manifest))["args"][1:], {"POD_NAMESPACE": NAMESPACE})
    assert s.serve.cert_secret == f"{NAMESPACE}/tidal-certs"
