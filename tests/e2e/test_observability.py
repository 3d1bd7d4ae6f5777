"""Observability on the real control plane: Prometheus scrapes the daemon, dashboards read it,
the failing-trigger warning is rate-limited, and secrets appear in no log, Event, status or metric.

Two private Prometheus servers scrape the daemon's own port (never the metrics API's) at once:
one with a static target, where series keep their own `namespace` label, and one configured like a
cluster's pod scrape (kubernetes_sd `role: pod` with the usual relabelling and `honor_labels:
false`), where the `namespace` target label (the pod's) wins and a series' own `namespace` is stored
as `exported_namespace`. The pod role itself is emulated through file_sd (ScrapedPod in
localenv.prometheus): the local control plane has no kubelet, so no pod gets an IP or runs, and
kubernetes_sd would find nothing to scrape; the targets carry the same `__meta_kubernetes_*` labels
the pod role sets, and the relabelling, scrape and storage are Prometheus' own. Dashboard queries
are taken from deploy/grafana/tidal-dashboard.json and from KEDA's dashboard (kedacore/keda
config/grafana/keda-dashboard.json, whose releases filter on `namespace` or on
`exported_namespace`); each must return data for the running objects under both scrape styles.
"""

from __future__ import annotations

import asyncio
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

from localenv.prometheus import PrometheusServer, ScrapedPod
from localenv.redis import RedisServer
from scaler import logs
from scaler.kube.client import JSON
from scaler.kube.paths import namespaced
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

# KEDA's dashboard (kedacore/keda config/grafana/keda-dashboard.json), with its variables already
# substituted as {ns} and its namespace label as {label}: `namespace` in some releases,
# `exported_namespace` (what a pod or service scrape stores) in others. The panels that read
# kube-state-metrics (kube_horizontalpodautoscaler_*, kube_deployment_spec_replicas) can't return
# data without kube-state-metrics; docs/observability.md maps them to tidal_scale_target_replicas.
KEDA_QUERIES = (
    pytest.param("sum by(job) (rate(keda_scaler_detail_errors_total[5m]))", id="total-errors"),
    pytest.param(
        'sum by(scaler) (rate(keda_scaler_detail_errors_total{{{label}=~"{ns}",'
        ' scaledObject=~".*", scaler=~".*"}}[5m]))',
        id="errors-by-scaler",
    ),
    pytest.param("rate(keda_scaled_object_errors_total[5m])", id="object-errors"),
    pytest.param(
        'sum by(scaledObject) (rate(keda_scaled_object_errors_total{{{label}=~"{ns}",'
        ' scaledObject=~".*"}}[5m]))',
        id="object-errors-by-object",
    ),
    pytest.param(
        'sum by(metric) (keda_scaler_metrics_value{{{label}=~"{ns}", metric=~".*"}})',
        id="metric-value",
    ),
)
KEDA_VARIABLES = (
    ("label_values(keda_scaled_object_errors_total, {label})", "{ns}"),
    ('label_values(keda_scaled_object_errors_total{{{label}="{ns}"}}, scaledObject)', "worker"),
    ('label_values(keda_scaler_detail_errors_total{{{label}="{ns}"}}, scaler)', "redis"),
    ('label_values(keda_scaler_detail_errors_total{{{label}="{ns}"}}, metric)', "s0-redis-"),
)
# The namespace every Tidal series would carry under a pod scrape: the scraped pod's.
TIDAL_POD_NAMESPACE = "tidal-system"
TIDAL_POD = "tidal-7d9f8c6b5-x2x9z"


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


async def _query_result(prom: PrometheusServer, query: str, regex: str) -> set[str]:
    """Grafana's query_result(expr) variable with its regex: each series is rendered as
    `name{k="v",...} value timestamp` and the regex's first group is the value."""
    m = re.fullmatch(r"query_result\((.*)\)", query.strip(), re.S)
    assert m is not None, query
    pattern = re.compile(regex.strip("/"))
    values = set()
    for series in await _prom_query(prom, m.group(1)):
        labels = {k: v for k, v in series["metric"].items() if k != "__name__"}
        text = series["metric"].get("__name__", "") + "{"
        text += ",".join(f'{k}="{v}"' for k, v in labels.items())
        text += "}} {} {}".format(series["value"][1], series["value"][0] * 1000)
        found = pattern.search(text)
        if found:
            values.add(found.group(1))
    return values


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def _substitute(expr: str, ns: str) -> str:
    """Grafana's variable substitution for one namespace and every object, scaler and trigger."""
    subst = {
        "$namespace": ns,
        "$scaledObject": ".*",
        "$scaler": ".*",
        "$__rate_interval": "1m",
        "$__range": "5m",
    }
    for var in sorted(subst, key=len, reverse=True):
        expr = expr.replace(var, subst[var])
    # label_replace's "$1" is PromQL's, not a Grafana variable.
    assert "$" not in expr.replace('"$1"', ""), expr
    return expr


def _dashboard_exprs(ns: str) -> list[tuple[str, str]]:
    """(panel title, expr) of every query in the dashboard, variables substituted."""
    return [
        (panel["title"], _substitute(target["expr"], ns))
        for panel in _dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def _dashboard_variables(ns: str) -> dict[str, tuple[str, str]]:
    """name -> (query, regex) of the dashboard's query variables, variables substituted."""
    return {
        var["name"]: (_substitute(var["query"]["query"], ns), var.get("regex", ""))
        for var in _dashboard()["templating"]["list"]
        if var["type"] == "query"
    }


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
    # Both scrape styles: whatever filters on the namespace reads `exported_namespace` too.
    queries = [expr for _, expr in _dashboard_exprs("ns")]
    queries += [q for q, _ in _dashboard_variables("ns").values()]
    for expr in queries:
        if "namespace" in expr:
            assert "exported_namespace" in expr, expr


async def test_prometheus_reads_tidal_like_keda(
    cluster: Cluster,
    kubeconfig: Path,
    redis_server: RedisServer,
    prometheus_factory: Callable[..., PrometheusServer],
) -> None:
    """Real Prometheus servers scrape the daemon during a 0 -> 1 scaling run with one healthy and
    one broken object, one with a static target and one like a cluster's pod scrape: under both,
    every query and variable of Tidal's dashboard and KEDA's dashboard queries return data for the
    objects' namespace; the broken object's errors keep counting at zero replicas, and health
    endpoints answer."""
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
        # As a cluster's pod scrape finds the Deployment's pod: its annotations name the metrics
        # port; the discovered address is another container port, which relabelling replaces.
        pod = ScrapedPod(
            f"127.0.0.1:{_closed_port()}",
            namespace=TIDAL_POD_NAMESPACE,
            name=TIDAL_POD,
            labels={"app.kubernetes.io/name": "tidal", "pod-template-hash": "7d9f8c6b5"},
            annotations={
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(service.health_port),
            },
        )
        pod_prom = prometheus_factory(pods=[pod])

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

        # The pod scrape really renamed the series' own label: the target's `namespace` is the
        # pod's, the object's namespace is in `exported_namespace`.
        renamed = await _wait_prom(
            pod_prom,
            f'keda_scaler_metrics_value{{exported_namespace="{ns}", scaledObject="worker"}}',
            "the pod scrape's exported_namespace",
        )
        assert renamed[0]["metric"]["namespace"] == TIDAL_POD_NAMESPACE
        assert renamed[0]["metric"]["pod"] == TIDAL_POD
        static = await _wait_prom(
            prom, f'keda_scaler_metrics_value{{namespace="{ns}"}}', "the static scrape's namespace"
        )
        assert "exported_namespace" not in static[0]["metric"]

        for style, server, label in (
            ("static", prom, "namespace"),
            ("pod-scrape", pod_prom, "exported_namespace"),
        ):
            for title, expr in _dashboard_exprs(ns):
                result = await _wait_prom(
                    server, expr, f"{style}: data for panel {title!r}: {expr}"
                )
                if ns in expr:  # filtered on the object's namespace: labelled with it too
                    seen = {series["metric"].get("namespace", ns) for series in result}
                    assert seen == {ns}, (style, title, expr, result)
            for name, (query, regex) in _dashboard_variables(ns).items():
                want = {"namespace": ns, "scaledObject": "worker", "scaler": "redis"}[name]
                await eventually(
                    lambda q=query, r=regex, s=server: _query_result(s, q, r),  # type: ignore[misc]
                    lambda vs, w=want: w in vs,  # type: ignore[misc]
                    timeout=60,
                    what=f"{style}: {want} in variable {name}: {query}",
                )
            for param in KEDA_QUERIES:
                expr = param.values[0].format(ns=ns, label=label)
                await _wait_prom(server, expr, f"{style}: data for KEDA's query {param.id}: {expr}")
            for query, expected in KEDA_VARIABLES:
                q, want = query.format(ns=ns, label=label), expected.format(ns=ns)
                values = await eventually(
                    lambda q=q, s=server: _label_values(s, q),  # type: ignore[misc]
                    lambda vs, want=want: any(v.startswith(want) for v in vs),  # type: ignore[misc]
                    timeout=60,
                    what=f"{style}: {want} in {q}",
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
    await cluster.create_secret_auth("redis-auth", "password", "redis-auth", SECRET)
    await cluster.create_secret_auth("wrong-auth", "password", "wrong-auth", WRONG)
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
