"""HTTPScaledObjects as the KEDA HTTP add-on documents them, shared by the HTTP tests."""

from __future__ import annotations

from typing import Any

# The add-on's reference example (docs/ref/vX.X.X/http_scaled_object.md), unchanged.
ADDON_DOC_EXAMPLE: dict[str, Any] = {
    "kind": "HTTPScaledObject",
    "apiVersion": "http.keda.sh/v1alpha1",
    "metadata": {
        "name": "xkcd",
        "annotations": {"httpscaledobject.keda.sh/skip-scaledobject-creation": "false"},
    },
    "spec": {
        "hosts": ["myhost.com", "*.example.com"],
        "pathPrefixes": ["/test"],
        "headers": [{"name": "X-Custom-Header", "value": "CustomValue"}],
        "scaleTargetRef": {
            "name": "xkcd",
            "kind": "Deployment",
            "apiVersion": "apps/v1",
            "service": "xkcd",
            "port": 8080,
        },
        "replicas": {"min": 5, "max": 10},
        "scaledownPeriod": 300,
        "scalingMetric": {"requestRate": {"granularity": "1s", "targetValue": 100, "window": "1m"}},
        "placeholderConfig": {
            "enabled": True,
            "refreshInterval": 5,
            "statusCode": 503,
            "headers": {"X-Service-Status": "warming-up"},
            "content": "<html><body>{{.ServiceName}} is starting...</body></html>\n",
        },
    },
}
# The add-on's walkthrough style: concurrency, min 0.
WALKTHROUGH: dict[str, Any] = {
    "kind": "HTTPScaledObject",
    "apiVersion": "http.keda.sh/v1alpha1",
    "metadata": {"name": "app-1"},
    "spec": {
        "hosts": ["app-1"],
        "scaleTargetRef": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "app-1",
            "service": "app-1",
            "port": 8080,
        },
        "replicas": {"min": 0, "max": 10},
        "scalingMetric": {"concurrency": {"targetValue": 1}},
        "scaledownPeriod": 1,
    },
}
