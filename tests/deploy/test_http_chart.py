"""The chart's interceptor (interceptor.enabled): lint, what it renders, a server-side dry run."""

from __future__ import annotations

from localenv.controlplane import ControlPlane
from localenv.helm import CHART, helm, set_args, template
from scaler.commands.intercept import SOURCES, build_parser
from tests.deploy.chart import Obj, grants, one, parse
from tests.deploy.test_helm_chart import _kubectl_dry_run

ON = {"interceptor.enabled": True}


def _render(namespace: str = "tidal-ns", **values: object) -> list[Obj]:
    return parse(template({**ON, **values}, namespace=namespace))


def test_lint_is_clean_with_the_interceptor() -> None:
    out = helm("lint", "--strict", CHART, *set_args(ON))
    assert "0 chart(s) failed" in out
    assert "[WARNING]" not in out, out


def test_off_by_default() -> None:
    objs = parse(template({}, namespace="tidal-ns"))
    assert not [o for o in objs if "interceptor" in o["metadata"]["name"]]


def test_interceptor_args_are_flags_tidal_intercept_accepts() -> None:
    objs = _render(**{"watch.namespace": "apps", "interceptor.backends": "pods"})
    deployment = one(objs, "Deployment", "tidal-interceptor")
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    assert c["args"][0] == "intercept"
    args = build_parser().parse_args(c["args"][1:])
    assert args.listen == "0.0.0.0:8080"
    assert args.admin == "0.0.0.0:9090"
    assert args.namespace == "apps"
    assert set(args.backends.split(",")) <= set(SOURCES)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > args.drain_timeout
    assert pod["serviceAccountName"] == "tidal-interceptor"


def test_the_daemons_services_never_select_interceptor_pods() -> None:
    objs = _render()
    pod_labels = one(objs, "Deployment", "tidal-interceptor")["spec"]["template"]["metadata"][
        "labels"
    ]
    for svc in (o for o in objs if o["kind"] == "Service"):
        selector = svc["spec"].get("selector") or {}
        selects = all(pod_labels.get(k) == v for k, v in selector.items())
        assert selects == ("interceptor" in svc["metadata"]["name"]), svc["metadata"]["name"]
    admin = one(objs, "Service", "tidal-interceptor-admin")
    assert admin["spec"]["clusterIP"] == "None"  # resolves to every replica


def test_rbac_lets_the_interceptor_read_and_the_daemon_own_scaled_objects() -> None:
    objs = _render()
    for resource in ("services", "pods"):
        assert grants(objs, "", resource, "watch")
    assert grants(objs, "discovery.k8s.io", "endpointslices", "watch")
    assert grants(objs, "http.keda.sh", "httpscaledobjects", "watch")
    assert grants(objs, "http.keda.sh", "httpscaledobjects/status", "patch")
    assert grants(objs, "keda.sh", "scaledobjects", "create")


def test_rendered_interceptor_passes_server_side_dry_run(
    control_plane: ControlPlane, namespace: str
) -> None:
    manifest = template({**ON}, namespace=namespace, extra=["--include-crds"])
    out = _kubectl_dry_run(control_plane.kubeconfig, manifest)
    assert out.count("(server dry run)") == len(parse(manifest))
    assert "httpscaledobjects.http.keda.sh" in out
