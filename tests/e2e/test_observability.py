"""Observability on the real control plane: Prometheus scrapes the daemon, dashboards read it,
the failing-trigger warning is rate-limited, and secrets appear in no log, Event, status or metric.

The private Prometheus scrapes the daemon's own port (never the metrics API's). Dashboard queries
are taken from deploy/grafana/tidal-dashboard.json and from KEDA's dashboard
(kedacore/keda config/grafana/keda-dashboard.json); each must return at least one series
during the scaling run.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from localenv.prometheus import PrometheusServer
from localenv.redis import RedisServer
from scaler import logs
from scaler.kube.client import JSON
from scaler.kube.paths import KEDA_GROUP, KEDA_VERSION, namespaced
from scaler.service import Service
from scaler.settings import PollSettings, WatchSettings
from tests.e2e.harness import (
    Cluster,
    deployment,
    eventually,
    redis_trigger,
    running_service,
    scaled_object,
)

T = TypeVar("T")


def _watch(cluster: Cluster) -> WatchSettings:
    """Watch only the test's namespace: leftovers of other tests (terminating namespaces whose
    objects still carry Tidal's finalizer) must not show up in this test's logs and metrics."""
    return WatchSettings(namespace=cluster.ns, cluster_object_namespace="tidal-system")


DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "tidal-dashboard.json"

# KEDA's dashboard (kedacore/keda config/grafana/keda-dashboard.json), with
# its variables already substituted as {ns}. The panels that read kube-state-metrics
# (kube_horizontalpodautoscaler_*, kube_deployment_spec_replicas) can't return data without
# kube-state-metrics; docs/observability.md maps them to tidal_scale_target_replicas.
KEDA_QUERIES = (
    pytest.param("sum by(job) (rate(keda_scaler_detail_errors_total[5m]))", id="total-errors"),
    pytest.param(
        'sum by(scaler) (rate(keda_scaler_detail_errors_total{{namespace=~"{ns}",'
        ' scaledObject=~".*", scaler=~".*"}}[5m]))',
        id="errors-by-scaler",
    ),
    pytest.param("rate(keda_scaled_object_errors_total[5m])", id="object-errors"),
    pytest.param(
        'sum by(scaledObject) (rate(keda_scaled_object_errors_total{{namespace=~"{ns}",'
        ' scaledObject=~".*"}}[5m]))',
        id="object-errors-by-object",
    ),
    pytest.param(
        'sum by(metric) (keda_scaler_metrics_value{{namespace=~"{ns}", metric=~".*"}})',
        id="metric-value",
    ),
)
KEDA_VARIABLES = (
    ("label_values(keda_scaled_object_errors_total, namespace)", "{ns}"),
    ('label_values(keda_scaled_object_errors_total{{namespace="{ns}"}}, scaledObject)', "worker"),
    ('label_values(keda_scaler_detail_errors_total{{namespace="{ns}"}}, scaler)', "redis"),
    ('label_values(keda_scaler_detail_errors_total{{namespace="{ns}"}}, metric)', "s0-redis-"),
)


async def _async(fn: Callable[[], T]) -> T:
    return fn()


def _later(fn: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    return lambda: _async(fn)


def _closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _get_text(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.text()


async def _scrape(service: Service) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The daemon's /metrics, parsed: (sample name, labels) -> value."""
    status, text = await _get_text(f"http://127.0.0.1:{service.health_port}/metrics")
    assert status == 200
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _sample(
    scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    for (n, lbls), value in scraped.items():
        if n == name and set(labels.items()) <= lbls:
            return value
    return None


async def _prom_query(prom: PrometheusServer, expr: str) -> list[Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{prom.url}/api/v1/query", params={"query": expr}) as resp,
    ):
        body = await resp.json()
    assert body["status"] == "success", (expr, body)
    result = body["data"]["result"]
    return result if isinstance(result, list) else [result]


async def _label_values(prom: PrometheusServer, query: str) -> set[str]:
    """Grafana's label_values(selector, label) through /api/v1/series."""
    m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query.strip())
    assert m is not None, query
    selector, label = m.groups()
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{prom.url}/api/v1/series", params={"match[]": selector}) as resp,
    ):
        body = await resp.json()
    assert body["status"] == "success", (query, body)
    return {s[label] for s in body["data"] if label in s}


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def _dashboard_exprs(ns: str) -> list[tuple[str, str]]:
    """(panel title, expr) of every query in the dashboard, variables substituted."""
    subst = {
        "$namespace": ns,
        "$scaledObject": ".*",
        "$scaler": ".*",
        "$__rate_interval": "1m",
        "$__range": "5m",
    }
    out = []
    for panel in _dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var in sorted(subst, key=len, reverse=True):
                expr = expr.replace(var, subst[var])
            assert "$" not in expr, expr
            out.append((panel["title"], expr))
    return out


def _series_found(result: list[Any]) -> bool:
    return len(result) >= 1


async def _wait_prom(prom: PrometheusServer, expr: str, what: str) -> list[Any]:
    return await eventually(lambda: _prom_query(prom, expr), _series_found, timeout=60, what=what)


def test_dashboard_json_is_a_grafana_dashboard() -> None:
    """The dashboard parses, has the namespace / scaledObject / scaler variables, and every panel
    query uses KEDA's or Tidal's metric names."""
    dash = _dashboard()
    names = [v["name"] for v in dash["templating"]["list"]]
    assert {"datasource", "namespace", "scaledObject", "scaler"} <= set(names)
    panel_ids = [p["id"] for p in dash["panels"]]
    assert len(panel_ids) == len(set(panel_ids))
    exprs = _dashboard_exprs("ns")
    assert exprs
    for title, expr in exprs:
        metrics = set(re.findall(r"\b((?:keda|tidal)_[a-z_]+)", expr))
        assert metrics, (title, expr)
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("trigger", "target", "replicas", "errors", "lateness", "staleness"):
        assert topic in titles, topic


async def test_prometheus_reads_tidal_like_keda(
    cluster: Cluster,
    kubeconfig: Path,
    redis_server: RedisServer,
    prometheus_factory: Callable[..., PrometheusServer],
) -> None:
    """A real Prometheus scrapes the daemon during a 0 -> 1 scaling run with one healthy and one
    broken object: every query of Tidal's dashboard and KEDA's dashboard queries return data,
    the broken object's errors keep counting at zero replicas, and health endpoints answer."""
    ns = cluster.ns
    list_name = f"jobs-{ns}"
    dead = f"127.0.0.1:{_closed_port()}"
    await cluster.create_deployment(deployment("worker", replicas=0))
    await cluster.create_deployment(deployment("broken", replicas=0))
    await cluster.create_so(
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(redis_server.address, list_name, listLength="2")],
            pollingInterval=1,
            cooldownPeriod=300,
        )
    )
    await cluster.create_so(
        scaled_object(
            "broken", "broken", [redis_trigger(dead, "jobs")], pollingInterval=1, maxReplicaCount=3
        )
    )
    async with running_service(kubeconfig, watch=_watch(cluster)) as service:
        base = f"http://127.0.0.1:{service.health_port}"
        assert await _get_text(f"{base}/healthz") == (200, "ok")
        await eventually(lambda: _get_text(f"{base}/readyz"), lambda r: r == (200, "ok"))
        prom = prometheus_factory([f"127.0.0.1:{service.health_port}"])

        r = aioredis.from_url(redis_server.url)
        await r.rpush(list_name, "a", "b", "c")
        await r.aclose()
        await eventually(lambda: cluster.replicas("worker"), lambda n: n == 1, what="0 -> 1")

        # Errors keep being counted while the broken object sits at zero replicas.
        broken = {"namespace": ns, "scaledObject": "broken"}
        first = await eventually(
            lambda: _scrape(service),
            lambda m: (_sample(m, "keda_scaled_object_errors_total", **broken) or 0) >= 1,
            what="errors of the broken object",
        )
        counted = _sample(first, "keda_scaler_detail_errors_total", **broken)
        assert counted is not None
        await eventually(
            lambda: _scrape(service),
            lambda m: (_sample(m, "keda_scaler_detail_errors_total", **broken) or 0) > counted,
            what="more errors",
        )
        assert await cluster.replicas("broken") == 0
        # The healthy trigger's error counter exists at 0 (KEDA initialises it too).
        scraped = await _scrape(service)
        worker = {"namespace": ns, "scaledObject": "worker"}
        assert _sample(scraped, "keda_scaler_detail_errors_total", **worker) == 0
        assert _sample(scraped, "keda_scaler_metrics_value", **worker) == 3
        assert _sample(scraped, "keda_scaler_active", **worker) == 1
        assert _sample(scraped, "keda_resource_registered_total", namespace=ns) == 2
        assert _sample(scraped, "tidal_scale_actions_total", direction="up", **worker) == 1

        for title, expr in _dashboard_exprs(ns):
            await _wait_prom(prom, expr, f"data for panel {title!r}: {expr}")
        for param in KEDA_QUERIES:
            expr = param.values[0].format(ns=ns)
            await _wait_prom(prom, expr, f"data for KEDA's query {param.id}: {expr}")
        for query, expected in KEDA_VARIABLES:
            q, want = query.format(ns=ns), expected.format(ns=ns)
            values = await eventually(
                lambda q=q: _label_values(prom, q),  # type: ignore[misc]
                lambda vs, want=want: any(v.startswith(want) for v in vs),  # type: ignore[misc]
                timeout=60,
                what=f"{want} in {q}",
            )
            assert values


async def test_failing_trigger_warns_on_transition_then_every_n_polls(
    cluster: Cluster,
    kubeconfig: Path,
    redis_factory: Callable[..., RedisServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A trigger that starts failing logs one warning at once, then one per N failed polls (not
    one per poll), with constant messages and structured fields; its staleness keeps growing
    and its last value is held; recovery is logged once."""
    every = 3
    caplog.set_level(logging.INFO)
    server = redis_factory()
    r = aioredis.from_url(server.url)
    await r.rpush("jobs", "a", "b")
    await r.aclose()
    await cluster.create_deployment(deployment("worker", replicas=0))
    await cluster.create_so(
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(server.address, "jobs")],
            pollingInterval=1,
            cooldownPeriod=300,
        )
    )
    metric = "s0-redis-jobs"
    poll = PollSettings(http_timeout=2.0, failing_log_every=every)
    async with running_service(kubeconfig, poll=poll, watch=_watch(cluster)) as service:
        daemon = service.daemon
        assert daemon is not None
        await eventually(lambda: cluster.replicas("worker"), lambda n: n == 1, what="0 -> 1")
        loop = asyncio.get_running_loop()
        server.kill()
        killed_at = loop.time()
        record = await eventually(
            _later(lambda: daemon.store.get(cluster.ns, "worker", metric)),
            lambda rec: rec is not None and rec.consecutive_failures >= 3 * every + 1,
            timeout=60,
            what="failed polls",
        )
        assert record is not None
        # Read the store and the captured records together (no await in between).
        failures = daemon.store.get(cluster.ns, "worker", metric)
        assert failures is not None
        warned = [
            rec
            for rec in caplog.records
            if rec.getMessage() == "trigger failing"
            and getattr(rec, "trigger", None) == metric
            and getattr(rec, "object", None) == f"{cluster.ns}/worker"
        ]
        expected = [
            f for f in range(1, failures.consecutive_failures + 1) if f == 1 or f % every == 0
        ]
        assert [getattr(rec, "failures", None) for rec in warned] == expected
        assert all(rec.levelno == logging.WARNING for rec in warned)
        assert all(getattr(rec, "error", "") for rec in warned)

        before = loop.time()
        scraped = await _scrape(service)
        labels = {"namespace": cluster.ns, "scaledObject": "worker", "metric": metric}
        age = _sample(scraped, "tidal_metric_staleness_seconds", **labels)
        assert age is not None
        assert age >= before - killed_at  # the last good value is older than the kill
        assert _sample(scraped, "keda_scaler_metrics_value", **labels) == 2  # held, not 0
        assert (_sample(scraped, "keda_scaler_detail_errors_total", **labels) or 0) >= len(expected)

        server.restart()
        await eventually(
            _later(
                lambda: [
                    r
                    for r in caplog.records
                    if r.getMessage() == "trigger recovered"
                    and getattr(r, "object", None) == f"{cluster.ns}/worker"
                ]
            ),
            lambda recs: len(recs) == 1,
            what="trigger recovered",
        )
        # Every record of Tidal's loggers has a constant message: variables travel in fields.
        ours = [rec for rec in caplog.records if rec.name.startswith("scaler")]
        assert ours
        assert all(not rec.args for rec in ours)


# ---------------------------------------------------------------------- secrets never leak

SECRET = "Hunter2-tidal-s3cr3t-9f1c"
WRONG = "Wr0ng-tidal-passw0rd-77aa"
URL_SECRET = "Url-tidal-t0ken-41d2"


async def _create_secret_and_auth(cluster: Cluster, name: str, password: str) -> None:
    await cluster.kube.create(
        namespaced("", "v1", "secrets", cluster.ns),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "data": {"password": base64.b64encode(password.encode()).decode()},
        },
    )
    await cluster.kube.create(
        namespaced(KEDA_GROUP, KEDA_VERSION, "triggerauthentications", cluster.ns),
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "TriggerAuthentication",
            "metadata": {"name": name},
            "spec": {
                "secretTargetRef": [{"parameter": "password", "name": name, "key": "password"}]
            },
        },
    )


def _with_auth(trigger: JSON, auth: str) -> JSON:
    return {**trigger, "authenticationRef": {"name": auth}}


async def test_secrets_never_leave_their_place(
    cluster: Cluster,
    kubeconfig: Path,
    redis_factory: Callable[..., RedisServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Safety rule 5: a Redis password from a TriggerAuthentication Secret (right and wrong) and
    credentials in a Prometheus serverAddress, through a scaling cycle with failures, appear in no
    log line (JSON or text, DEBUG level), Event, ScaledObject status, HPA or /metrics text."""
    caplog.set_level(logging.DEBUG)
    server = redis_factory(password=SECRET)
    r = aioredis.from_url(server.url)
    await r.rpush("jobs", "a", "b", "c")
    await r.aclose()
    await _create_secret_and_auth(cluster, "redis-auth", SECRET)
    await _create_secret_and_auth(cluster, "wrong-auth", WRONG)
    for name in ("good", "wrong", "urlcreds"):
        await cluster.create_deployment(deployment(name, replicas=0))
    trigger = redis_trigger(server.address, "jobs")
    await cluster.create_so(
        scaled_object("good", "good", [_with_auth(trigger, "redis-auth")], pollingInterval=1)
    )
    await cluster.create_so(
        scaled_object("wrong", "wrong", [_with_auth(trigger, "wrong-auth")], pollingInterval=1)
    )
    prom_trigger = {
        "type": "prometheus",
        "metadata": {
            "serverAddress": f"http://tidal:{URL_SECRET}@127.0.0.1:{_closed_port()}/prom",
            "query": "sum(up)",
            "threshold": "1",
        },
    }
    await cluster.create_so(
        scaled_object("urlcreds", "urlcreds", [prom_trigger], pollingInterval=1)
    )
    async with running_service(kubeconfig, watch=_watch(cluster)) as service:
        daemon = service.daemon
        assert daemon is not None
        # The right password works (so the secret really reached the scaler) ...
        await eventually(lambda: cluster.replicas("good"), lambda n: n == 1, what="good 0 -> 1")
        # ... the wrong one and the URL with credentials fail, visibly.
        for name, metric in (("wrong", "s0-redis-jobs"), ("urlcreds", "s0-prometheus")):
            await eventually(
                _later(lambda n=name, m=metric: daemon.store.get(cluster.ns, n, m)),  # type: ignore[misc]
                lambda rec: rec is not None and rec.consecutive_failures >= 3,
                what=f"{name} failing",
            )
        await eventually(
            lambda: cluster.condition("wrong", "Ready"),
            lambda c: c is not None,
            what="status of the failing object",
        )
        server.kill()  # now the good object fails too (connection errors with auth configured)
        await eventually(
            _later(lambda: daemon.store.get(cluster.ns, "good", "s0-redis-jobs")),
            lambda rec: rec is not None and rec.consecutive_failures >= 2,
            what="good failing",
        )
        _, metrics_text = await _get_text(f"http://127.0.0.1:{service.health_port}/metrics")

    events = await cluster.kube.get(namespaced("", "v1", "events", cluster.ns))
    # Only the status: the spec is the user's own (it carries the URL they wrote).
    statuses = [(await cluster.get_so(n)).get("status", {}) for n in ("good", "wrong", "urlcreds")]
    hpas = [await cluster.hpa(f"keda-hpa-{n}") for n in ("good", "wrong", "urlcreds")]
    assert events.get("items"), "the run produced Events to inspect"
    assert all(s.get("conditions") for s in statuses)

    lines: list[str] = []
    for formatter in (logs.JsonFormatter(), logs.TextFormatter()):
        lines += [formatter.format(rec) for rec in caplog.records]
    for name in ("wrong", "urlcreds", "good"):  # each failure was logged, with its error
        assert any("trigger failing" in ln and f"/{name}" in ln for ln in lines), name
    places = {
        "logs": "\n".join(lines),
        "events": json.dumps(events),
        "status": json.dumps(statuses),
        "hpa": json.dumps(hpas),
        "metrics": metrics_text,
    }
    for place, text in places.items():
        for secret in (SECRET, WRONG, URL_SECRET):
            assert secret not in text, f"{secret!r} leaked into {place}"
