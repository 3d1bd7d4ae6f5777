"""Delegated authorization of metrics API requests (metrics_api.authz): request attributes as
kube-apiserver derives them, the SubjectAccessReview body, and the decision cache on a clock
the test sets."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from metrics_api.authz import (
    Attributes,
    AuthorizationUnavailable,
    CachingAuthorizer,
    Decision,
    UserInfo,
    forbidden_message,
    request_attributes,
    user_from_headers,
)
from scaler.kube.access import review_body

BOB = UserInfo("bob", ("dev",))
EM = "/apis/external.metrics.k8s.io/v1beta1"


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        pytest.param(
            "GET",
            f"{EM}/namespaces/shop/s0-redis-jobs",
            {"labelSelector": "x=y"},
            Attributes(BOB, "list", "external.metrics.k8s.io", "v1beta1", "shop", "s0-redis-jobs"),
            id="metric-is-a-list",
        ),
        pytest.param(
            "GET",
            f"{EM}/namespaces/shop/s0-redis-jobs/one",
            {},
            Attributes(
                BOB, "get", "external.metrics.k8s.io", "v1beta1", "shop", "s0-redis-jobs", "", "one"
            ),
            id="named-is-a-get",
        ),
        pytest.param(
            "GET",
            f"{EM}/namespaces/shop/m",
            {"watch": "true"},
            Attributes(BOB, "watch", "external.metrics.k8s.io", "v1beta1", "shop", "m"),
            id="watch",
        ),
        pytest.param(
            "GET",
            f"{EM}/m",
            {},
            Attributes(BOB, "list", "external.metrics.k8s.io", "v1beta1", "", "m"),
            id="cluster-scoped",
        ),
        pytest.param(
            "POST",
            f"{EM}/namespaces/shop/m",
            {},
            Attributes(BOB, "create", "external.metrics.k8s.io", "v1beta1", "shop", "m"),
            id="post-is-create",
        ),
        pytest.param("GET", EM, {}, Attributes(BOB, "get", path=EM), id="discovery-version"),
        pytest.param(
            "GET",
            "/apis/external.metrics.k8s.io",
            {},
            Attributes(BOB, "get", path="/apis/external.metrics.k8s.io"),
            id="discovery-group",
        ),
    ],
)
def test_attributes_as_the_apiserver_derives_them(
    method: str, path: str, query: dict[str, str], expected: Attributes
) -> None:
    assert request_attributes(BOB, method, path, query) == expected


def test_user_groups_and_extra_come_from_the_proxy_headers() -> None:
    headers = [
        ("X-Remote-User", "system:serviceaccount:kube-system:horizontal-pod-autoscaler"),
        ("X-Remote-Group", "system:serviceaccounts"),
        ("X-Remote-Group", "system:authenticated"),
        ("X-Remote-Extra-Authentication.kubernetes.io%2fpod-name", "kcm-0"),
        ("Accept", "application/json"),
    ]
    user = user_from_headers(headers)
    assert user == UserInfo(
        "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        ("system:serviceaccounts", "system:authenticated"),
        (("authentication.kubernetes.io/pod-name", ("kcm-0",)),),
    )


def test_review_body_for_a_metric_and_for_discovery() -> None:
    metric = review_body(request_attributes(BOB, "GET", f"{EM}/namespaces/shop/m", {}))
    assert metric == {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": "bob",
            "groups": ["dev"],
            "resourceAttributes": {
                "verb": "list",
                "group": "external.metrics.k8s.io",
                "version": "v1beta1",
                "resource": "m",
                "subresource": "",
                "namespace": "shop",
                "name": "",
            },
        },
    }
    discovery = review_body(request_attributes(BOB, "GET", EM, {}))
    assert discovery["spec"]["nonResourceAttributes"] == {"path": EM, "verb": "get"}


def test_forbidden_message_reads_like_kube_apiservers() -> None:
    a = request_attributes(BOB, "GET", f"{EM}/namespaces/shop/s0-redis-jobs", {})
    assert forbidden_message(a) == (
        's0-redis-jobs.external.metrics.k8s.io is forbidden: User "bob" cannot list resource '
        '"s0-redis-jobs" in API group "external.metrics.k8s.io" in the namespace "shop"'
    )


class Reviewer:
    """A fake SubjectAccessReview endpoint: allows `allowed` users; counts calls."""

    def __init__(self, allowed: set[str]) -> None:
        self.allowed = allowed
        self.calls = 0
        self.fail = False
        self.gate: asyncio.Event | None = None

    async def authorize(self, attributes: Attributes) -> Decision:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise AuthorizationUnavailable("apiserver down")
        return Decision(attributes.user.name in self.allowed)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _attrs(user: str, metric: str = "m") -> Attributes:
    return request_attributes(UserInfo(user), "GET", f"{EM}/namespaces/ns/{metric}", {})


async def test_decisions_are_cached_for_their_ttl() -> None:
    inner, clock, registry = Reviewer({"hpa"}), Clock(), CollectorRegistry()
    cache = CachingAuthorizer(inner, registry, allow_ttl=10, deny_ttl=5, clock=clock)
    for _ in range(3):
        assert (await cache.authorize(_attrs("hpa"))).allowed
        assert not (await cache.authorize(_attrs("eve"))).allowed
    assert inner.calls == 2
    clock.now += 6  # deny expired, allow not
    assert not (await cache.authorize(_attrs("eve"))).allowed
    assert (await cache.authorize(_attrs("hpa"))).allowed
    assert inner.calls == 3
    clock.now += 5
    await cache.authorize(_attrs("hpa"))
    assert inner.calls == 4

    def count(decision: str, source: str) -> float:
        labels = {"decision": decision, "source": source}
        return registry.get_sample_value("tidal_metrics_api_authorization_total", labels) or 0

    assert (count("allowed", "review"), count("denied", "review")) == (2, 2)
    assert (count("allowed", "cache"), count("denied", "cache")) == (3, 2)


async def test_the_cache_is_bounded_least_recently_used_out() -> None:
    inner = Reviewer({"a", "b", "c"})
    cache = CachingAuthorizer(inner, max_entries=2, clock=Clock())
    await cache.authorize(_attrs("a"))
    await cache.authorize(_attrs("b"))
    await cache.authorize(_attrs("a"))  # a is now the most recent
    await cache.authorize(_attrs("c"))  # b goes
    assert len(cache) == 2
    calls = inner.calls
    await cache.authorize(_attrs("a"))
    assert inner.calls == calls
    await cache.authorize(_attrs("b"))
    assert inner.calls == calls + 1


async def test_errors_are_raised_and_never_cached() -> None:
    inner = Reviewer({"hpa"})
    inner.fail = True
    cache = CachingAuthorizer(inner, clock=Clock())
    with pytest.raises(AuthorizationUnavailable):
        await cache.authorize(_attrs("hpa"))
    inner.fail = False
    assert (await cache.authorize(_attrs("hpa"))).allowed
    assert inner.calls == 2


async def test_concurrent_identical_questions_share_one_review() -> None:
    inner = Reviewer({"hpa"})
    inner.gate = asyncio.Event()
    cache = CachingAuthorizer(inner, clock=Clock())
    waiting = [asyncio.create_task(cache.authorize(_attrs("hpa"))) for _ in range(20)]
    await asyncio.sleep(0)
    inner.gate.set()
    assert all(d.allowed for d in await asyncio.gather(*waiting))
    assert inner.calls == 1


async def test_different_metrics_or_users_are_different_questions() -> None:
    inner = Reviewer({"hpa"})
    cache = CachingAuthorizer(inner, clock=Clock())
    await cache.authorize(_attrs("hpa", "m1"))
    await cache.authorize(_attrs("hpa", "m2"))
    await cache.authorize(
        request_attributes(UserInfo("hpa", ("g",)), "GET", f"{EM}/namespaces/ns/m1", {})
    )
    assert inner.calls == 3


async def test_system_masters_is_reviewed_too() -> None:
    inner = Reviewer({"system:kube-aggregator"})
    cache = CachingAuthorizer(inner, clock=Clock())
    masters = UserInfo("system:kube-aggregator", ("system:masters",))
    assert (await cache.authorize(request_attributes(masters, "GET", EM, {}))).allowed
    assert inner.calls == 1
