"""A minimal external-metrics API server for smoke tests of the aggregation path.

Serves `external.metrics.k8s.io/v1beta1` over HTTPS on 127.0.0.1 with values the test sets, and
records who called: the client cert must verify against the front-proxy CA, so a recorded
request with `X-Remote-User` proves it came through kube-apiserver's aggregator.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from localenv.certs import ServingCerts, extension_server_certs

GROUP_VERSION = "external.metrics.k8s.io/v1beta1"
PREFIX = f"/apis/{GROUP_VERSION}"


@dataclass(frozen=True, slots=True)
class SeenRequest:
    path: str
    remote_user: str | None
    remote_groups: tuple[str, ...]
    client_cn: str | None


def _quantity(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{round(value * 1000)}m"


def _common_name(peercert: object) -> str | None:
    if not isinstance(peercert, dict):
        return None
    for rdn in peercert.get("subject", ()):
        for key, val in rdn:
            if key == "commonName":
                return str(val)
    return None


@dataclass
class MetricsStub:
    """Set `values[metric_name]`; read `seen` for the requests that arrived."""

    front_proxy_ca: Path
    service_dns: str = "tidal-metrics.tidal-system.svc"
    values: dict[str, float] = field(default_factory=dict)
    seen: list[SeenRequest] = field(default_factory=list)
    port: int = 0
    certs: ServingCerts | None = None
    _runner: web.AppRunner | None = None

    def _ssl_context(self, certs: ServingCerts) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory() as tmp:
            crt, key = certs.serving.write(Path(tmp), "serving")
            ctx.load_cert_chain(str(crt), str(key))
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(cafile=str(self.front_proxy_ca))
        return ctx

    def _record(self, request: web.Request) -> None:
        groups = tuple(request.headers.getall("X-Remote-Group", ()))
        peercert = request.transport.get_extra_info("peercert") if request.transport else None
        self.seen.append(
            SeenRequest(
                path=request.path,
                remote_user=request.headers.get("X-Remote-User"),
                remote_groups=groups,
                client_cn=_common_name(peercert),
            )
        )

    async def _discovery(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response(
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": GROUP_VERSION,
                "resources": [
                    {
                        "name": "externalmetrics",
                        "singularName": "",
                        "namespaced": True,
                        "kind": "ExternalMetricValueList",
                        "verbs": ["get"],
                    }
                ],
            }
        )

    async def _metric(self, request: web.Request) -> web.Response:
        self._record(request)
        metric = request.match_info["metric"]
        if metric not in self.values:
            return web.json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "reason": "NotFound",
                    "code": 404,
                    "message": f"no metric {metric}",
                },
                status=404,
            )
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        item = {
            "metricName": metric,
            "metricLabels": {},
            "timestamp": now,
            "value": _quantity(self.values[metric]),
        }
        return web.json_response(
            {
                "kind": "ExternalMetricValueList",
                "apiVersion": GROUP_VERSION,
                "metadata": {},
                "items": [item],
            }
        )

    async def start(self) -> MetricsStub:
        self.certs = extension_server_certs([self.service_dns])
        app = web.Application()
        app.router.add_get(PREFIX, self._discovery)
        app.router.add_get(PREFIX + "/namespaces/{namespace}/{metric}", self._metric)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        site = web.SockSite(self._runner, sock, ssl_context=self._ssl_context(self.certs))
        await site.start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
