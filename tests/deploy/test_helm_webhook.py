"""The chart's admission webhook (`webhook.enabled`): off by default; on, a
ValidatingWebhookConfiguration on the metrics API's Service and KEDA's paths, scoped to the
watched namespace in a namespace-scoped release, with just the rights its code uses; the
apiserver accepts it (server-side dry run)."""

from __future__ import annotations

import subprocess

import pytest

from localenv.controlplane import ControlPlane
from localenv.helm import template
from localenv.paths import k8s_bin
from tests.deploy.chart import grants, of_kind, one, parse

ON = {"webhook.enabled": True}
CONFIG = "tidal-validating-webhook"


def test_off_by_default() -> None:
    objs = parse(template({}))
    assert of_kind(objs, "ValidatingWebhookConfiguration") == []


@pytest.mark.parametrize(
    ("values", "selector"),
    [
        pytest.param(ON, None, id="cluster-wide"),
        pytest.param(
            {**ON, "watch.namespace": "apps", "webhook.failurePolicy": "Fail"},
            "apps",
            id="namespaced",
        ),
    ],
)
def test_webhook_configuration(values: dict[str, object], selector: str | None) -> None:
    objs = parse(template(values))
    config = one(objs, "ValidatingWebhookConfiguration", CONFIG)
    hooks = {h["name"]: h for h in config["webhooks"]}
    assert sorted(hooks) == [
        "vclustertriggerauthentication.tidal.dev",
        "vscaledobject.tidal.dev",
        "vtriggerauthentication.tidal.dev",
    ]
    so = hooks["vscaledobject.tidal.dev"]
    assert so["clientConfig"] == {
        "service": {
            "name": "tidal-metrics-api",
            "namespace": "tidal-system",
            "port": 443,
            "path": "/validate-keda-sh-v1alpha1-scaledobject",
        }
    }
    assert so["failurePolicy"] == values.get("webhook.failurePolicy", "Ignore")
    assert so["rules"][0]["resources"] == ["scaledobjects"]
    if selector is None:
        assert "namespaceSelector" not in so
    else:
        assert so["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": selector}}
    assert "namespaceSelector" not in hooks["vclustertriggerauthentication.tidal.dev"]
    # The caBundle sync may read and write this one configuration, nothing else.
    writes = grants(
        objs, "admissionregistration.k8s.io", "validatingwebhookconfigurations", "update"
    )
    assert [rule.get("resourceNames") for _, _, rule in writes] == [[CONFIG]]
    assert grants(objs, "", "limitranges", "list")
    # Tidal keeps this configuration's caBundle on its managed CA: it must be told its name.
    args = one(objs, "Deployment", "tidal")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--cert-webhook={CONFIG}" in args


def test_the_daemon_is_not_told_of_a_webhook_that_is_off() -> None:
    objs = parse(template({}))
    args = one(objs, "Deployment", "tidal")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in args if a.startswith("--cert-webhook")]


def test_apiserver_accepts_it(control_plane: ControlPlane, namespace: str) -> None:
    manifest = template(ON, namespace=namespace)
    kubectl = [str(k8s_bin("kubectl")), "--kubeconfig", str(control_plane.kubeconfig)]
    proc = subprocess.run(
        [*kubectl, "apply", "--dry-run=server", "-f", "-"],
        input=manifest,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "validatingwebhookconfiguration.admissionregistration.k8s.io/tidal-validating-webhook"
        in (proc.stdout)
    )
