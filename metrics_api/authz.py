"""Delegated authorization: may the user the aggregator vouches for make this request?

As Kubernetes' own aggregated API servers do (k8s.io/apiserver's delegating authorizer): the
request's attributes are derived from its path the way kube-apiserver derives them (a GET of
``/apis/external.metrics.k8s.io/v1beta1/namespaces/NS/METRIC`` is verb ``list`` on resource
``METRIC`` in ``NS``; discovery paths are non-resource URLs), and the decision comes from a
SubjectAccessReview made by the caller-supplied `Authorizer` (the daemon's, over its kube
client: this package imports nothing from the core). `CachingAuthorizer` remembers allow and deny
decisions for a short TTL, bounded in size; an error is never cached and never an allow.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote

from prometheus_client import CollectorRegistry, Counter

# As kube-apiserver's webhook authorizer defaults (--authorization-webhook-cache-authorized-ttl
# 5m, -unauthorized-ttl 30s), not k8s.io/apiserver's 10 s: every metric is its own resource, and
# the HPA asks for each one every sync period (15 s), so a 10 s TTL missed on every request — a
# SubjectAccessReview round trip in front of each value (p50 2 ms -> 6 ms via the aggregator at
# 1000 objects, benchmarks/metrics_api_latency). A revoked grant stops within 5 minutes.
ALLOW_TTL = 300.0
DENY_TTL = 30.0
MAX_ENTRIES = 16384  # one per (identity, metric): room for 5000 objects x a few identities


@dataclass(frozen=True, slots=True)
class UserInfo:
    """The identity the front proxy asserted (X-Remote-User, -Group, -Extra-*)."""

    name: str
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class Attributes:
    """A request as an authorizer sees it: resource attributes, or a non-resource `path`."""

    user: UserInfo
    verb: str
    group: str = ""
    version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""  # set (and the resource fields empty) for a non-resource request

    @property
    def is_resource(self) -> bool:
        return not self.path


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""


class AuthorizationUnavailable(Exception):
    """The authorizer could not decide (the apiserver is unreachable, say): answer 5xx."""


class Authorizer(Protocol):
    async def authorize(self, attributes: Attributes) -> Decision: ...


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def user_from_headers(headers: Iterable[tuple[str, str]]) -> UserInfo:
    """The front proxy's identity from every (name, value) header pair, repeats included."""
    name, groups = "", []
    extra: dict[str, list[str]] = {}
    prefix = "x-remote-extra-"
    for header, value in headers:
        key = header.lower()
        if key == "x-remote-user" and not name:
            name = value
        elif key == "x-remote-group" and value:
            groups.append(value)
        elif key.startswith(prefix):
            extra.setdefault(unquote(key[len(prefix) :]), []).append(value)
    return UserInfo(name, tuple(groups), tuple(sorted((k, tuple(v)) for k, v in extra.items())))


def request_attributes(
    user: UserInfo, method: str, path: str, query: Mapping[str, str]
) -> Attributes:
    """Attributes of a request under /apis, as kube-apiserver's RequestInfoFactory makes them."""
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) < 4 or parts[0] != "apis":  # /apis, /apis/G, /apis/G/V: discovery
        return Attributes(user, method.lower(), path=path)
    group, version, rest = parts[1], parts[2], parts[3:]
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:  # .../namespaces/NS/RESOURCE[/NAME[/SUB]]
        namespace, rest = rest[1], rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if method in ("GET", "HEAD"):
        watch = query.get("watch", "").lower() in ("1", "true")
        verb = "watch" if watch else ("get" if name else "list")
    else:
        verb = _VERBS.get(method, method.lower())
    return Attributes(user, verb, group, version, namespace, resource, subresource, name)


class CachingAuthorizer:
    """An Authorizer that remembers decisions: allowed for `allow_ttl`, denied for `deny_ttl`,
    at most `max_entries` (least recently used out first). Concurrent identical questions share
    one review. `clock` is monotonic seconds (a parameter, so tests control it).

    Unlike k8s.io/apiserver's default, no group is allowed without a review (its
    AlwaysAllowGroups is system:masters): a masters decision is one cached review anyway, and
    every path then goes through the same SubjectAccessReview and its RBAC."""

    def __init__(
        self,
        inner: Authorizer,
        registry: CollectorRegistry | None = None,
        *,
        allow_ttl: float = ALLOW_TTL,
        deny_ttl: float = DENY_TTL,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._allow_ttl, self._deny_ttl = allow_ttl, deny_ttl
        self._max = max_entries
        self._clock = clock
        self._cache: OrderedDict[Attributes, tuple[float, Decision]] = OrderedDict()
        self._pending: dict[Attributes, asyncio.Future[Decision]] = {}
        self.decisions = Counter(
            "tidal_metrics_api_authorization_total",
            "Authorization decisions on metrics API requests, by outcome and by where they "
            "came from (cache, or review: a SubjectAccessReview)",
            ["decision", "source"],
            registry=registry,
        )

    def __len__(self) -> int:
        return len(self._cache)

    async def authorize(self, attributes: Attributes) -> Decision:
        now = self._clock()
        hit = self._cache.get(attributes)
        if hit is not None:
            expires, decision = hit
            if now < expires:
                self._cache.move_to_end(attributes)
                self._count(decision, "cache")
                return decision
            del self._cache[attributes]
        pending = self._pending.get(attributes)
        if pending is not None:
            decision = await asyncio.shield(pending)
            self._count(decision, "cache")
            return decision
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._pending[attributes] = future
        try:
            decision = await self._inner.authorize(attributes)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            self.decisions.labels("error", "review").inc()
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._pending[attributes]
        future.set_result(decision)
        ttl = self._allow_ttl if decision.allowed else self._deny_ttl
        if ttl > 0:
            self._cache[attributes] = (self._clock() + ttl, decision)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        self._count(decision, "review")
        return decision

    def _count(self, decision: Decision, source: str) -> None:
        self.decisions.labels("allowed" if decision.allowed else "denied", source).inc()


def forbidden_message(a: Attributes) -> str:
    """kube-apiserver's wording of a 403."""
    who = f'User "{a.user.name}"'
    if not a.is_resource:
        return f'forbidden: {who} cannot {a.verb} path "{a.path}"'
    what = a.resource + (f"/{a.subresource}" if a.subresource else "")
    target = f'{what}.{a.group} "{a.name}"' if a.name else f"{what}.{a.group}"
    where = f' in the namespace "{a.namespace}"' if a.namespace else " at the cluster scope"
    return (
        f'{target} is forbidden: {who} cannot {a.verb} resource "{what}" '
        f'in API group "{a.group}"{where}'
    )
