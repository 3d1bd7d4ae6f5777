"""The admission webhook's HTTP side on the metrics API's real TLS socket: AdmissionReview v1
in and out, no client certificate needed (kube-apiserver presents none to a webhook), a
validator that fails never blocks, and /apis still wants the aggregator's certificate."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from metrics_api.admission import AdmissionRequest, Verdict
from metrics_api.server import serve_metrics_api
from metrics_api.source import MetricNotFound, MetricReading

PATH = "/validate-keda-sh-v1alpha1-scaledobject"


class NoMetrics:
    def read(self, namespace: str, metric: str, scaled_object: str) -> MetricReading:
        raise MetricNotFound(metric)

    def ready(self) -> bool:
        return True


class Recorder:
    """Denies objects named "bad", fails on "boom", allows the rest with a warning."""

    def __init__(self) -> None:
        self.seen: list[AdmissionRequest] = []

    async def review(self, request: AdmissionRequest) -> Verdict:
        self.seen.append(request)
        if request.name == "boom":
            raise RuntimeError("a bug")
        if request.name == "bad":
            return Verdict(False, "spec.minReplicaCount: MinReplicaCount=5 must be less than 2")
        return Verdict(True, warnings=("looked at it",))


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, Recorder]]:
    validator = Recorder()
    async with serve_metrics_api(
        NoMetrics(), CollectorRegistry(), "127.0.0.1:0", validator=validator
    ) as (_, port):
        yield port, validator


def review(name: str, kind: str = "ScaledObject") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": f"uid-{name}",
            "kind": {"group": "keda.sh", "version": "v1alpha1", "kind": kind},
            "operation": "CREATE",
            "namespace": "shop",
            "name": name,
            "object": {"metadata": {"name": name}},
            "dryRun": True,
        },
    }


async def post(port: int, body: object, path: str = PATH) -> tuple[int, Any]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the self-signed development certificate
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"https://127.0.0.1:{port}{path}", json=body, ssl=ctx) as resp,
    ):
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


@pytest.mark.parametrize(
    ("name", "allowed", "message", "warnings"),
    [
        pytest.param(
            "bad",
            False,
            "spec.minReplicaCount: MinReplicaCount=5 must be less than 2",
            None,
            id="denied",
        ),
        pytest.param("good", True, None, ["looked at it"], id="allowed-with-warning"),
        pytest.param(
            "boom", True, None, ["Tidal's admission check failed; see its logs"], id="fails-open"
        ),
    ],
)
async def test_answers(
    server: tuple[int, Recorder],
    name: str,
    allowed: bool,
    message: str | None,
    warnings: list[str] | None,
) -> None:
    port, validator = server
    status, body = await post(port, review(name))
    assert status == 200
    assert body["apiVersion"] == "admission.k8s.io/v1"
    assert body["kind"] == "AdmissionReview"
    response = body["response"]
    assert response["uid"] == f"uid-{name}"
    assert response["allowed"] is allowed
    assert response.get("status", {}).get("message") == message
    assert response.get("warnings") == warnings
    seen = validator.seen[-1]
    assert (seen.kind, seen.operation, seen.namespace, seen.dry_run) == (
        "ScaledObject",
        "CREATE",
        "shop",
        True,
    )


async def test_a_kind_the_path_does_not_review_is_let_through(
    server: tuple[int, Recorder],
) -> None:
    port, validator = server
    status, body = await post(port, review("bad", kind="ScaledJob"))
    assert status == 200
    assert body["response"]["allowed"] is True
    assert validator.seen == []


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"kind": "Pod"}, id="not-a-review"),
        pytest.param({"kind": "AdmissionReview", "request": {}}, id="no-uid"),
        pytest.param("[", id="a-json-string"),
    ],
)
async def test_a_malformed_review_is_a_bad_request(
    server: tuple[int, Recorder], body: object
) -> None:
    port, validator = server
    status, _ = await post(port, body)
    assert status == 400
    assert validator.seen == []


async def test_metrics_paths_still_need_the_aggregators_certificate(
    server: tuple[int, Recorder],
) -> None:
    port, _ = server
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    url = f"https://127.0.0.1:{port}/apis/external.metrics.k8s.io/v1beta1"
    async with aiohttp.ClientSession() as session, session.get(url, ssl=ctx) as resp:
        assert resp.status == 401
