"""`placeholderConfig.contentConfigMap` against the real API server: the page is the named
ConfigMap key, kept current by the interceptor's ConfigMap watch (an edit shows in the next
answer without a restart; a deleted ConfigMap falls back to the built-in page).

Real kube-apiserver and a real `tidal intercept` process; no pods are needed (the workload has no
ready backend, which is when the placeholder is served).
"""

from __future__ import annotations

import aiohttp

from localenv.pytest_http import InterceptorFactory, InterceptorProcess
from tests.e2e.harness import Cluster, eventually
from tests.e2e.http_helpers import create, http_scaled_object, service

HOST = "page.example"


async def _page(proxy: InterceptorProcess) -> tuple[int, str, str]:
    headers = {"Host": HOST, "X-Request-ID": "r-1"}
    async with aiohttp.ClientSession() as http, http.get(proxy.url + "/", headers=headers) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.text()


async def test_the_placeholder_page_is_the_config_maps_key_and_follows_its_edits(
    cluster: Cluster, interceptors: InterceptorFactory
) -> None:
    cm_path = f"/api/v1/namespaces/{cluster.ns}/configmaps"
    await cluster.kube.create(
        cm_path,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "pages"},
            "data": {"warming.html": "<p>{{.ServiceName}}/{{ .Namespace }} v1 {{.RequestID}}</p>"},
        },
    )
    await create(cluster.kube, cluster.ns, service("web", 8080))
    placeholder = {
        "enabled": True,
        "statusCode": 202,
        "contentConfigMap": {"name": "pages", "key": "warming.html"},
        "content": "inline page",  # the ConfigMap's key wins while it exists
    }
    await create(
        cluster.kube,
        cluster.ns,
        http_scaled_object("web", HOST, placeholderConfig=placeholder),
    )
    proxy = await interceptors.start()

    first = await eventually(
        lambda: _page(proxy), lambda p: p[0] == 202 and "v1" in p[2], what="the ConfigMap page"
    )
    assert first == (202, "text/html; charset=utf-8", f"<p>web/{cluster.ns} v1 r-1</p>")

    await cluster.kube.merge_patch(
        f"{cm_path}/pages", {"data": {"warming.html": "<p>v2 {{.ServiceName}}</p>"}}
    )
    edited = await eventually(lambda: _page(proxy), lambda p: "v2" in p[2], what="the edit")
    assert edited[2] == "<p>v2 web</p>"

    await cluster.kube.delete(f"{cm_path}/pages")
    gone = await eventually(lambda: _page(proxy), lambda p: "v2" not in p[2], what="fallback")
    assert gone[:2] == (202, "text/html; charset=utf-8")
    assert gone[2] == "inline page"  # the route's inline content once the ConfigMap is gone
    assert 'outcome="placeholder"' in proxy.metrics()
