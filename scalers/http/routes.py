"""HTTPScaledObjects as routes: which target a request's Host and path go to.

An HTTPScaledObject (``http.keda.sh/v1alpha1``, the KEDA HTTP add-on's API, applied unchanged)
routes the requests whose Host is one of ``spec.hosts`` (exact, ``*.suffix`` wildcard, or ``*``
/ none for any host) and whose path starts with one of ``spec.pathPrefixes`` (default ``/``) to
``spec.scaleTargetRef.service`` on ``port`` (or ``portName``) in its namespace. Precedence as the
add-on documents: an exact host beats a wildcard, a longer wildcard beats a shorter one, any
wildcard beats the catch-all; among those, the longest path prefix wins.

Parsing never raises: a malformed object becomes a route with `problems`, which the interceptor
answers with 502 rather than routing somewhere unintended.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_WAIT = 20.0  # seconds a request is held for a backend (the add-on's conditionWait)
DEFAULT_FAILOVER_WAIT = 30.0  # coldStartTimeoutFailoverRef.timeoutSeconds default
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

MAX_CACHED_HOSTS = 4096
PAGE_KEY = "template"  # the contentConfigMap key read when none is named
Key = tuple[str, str]  # (namespace, HTTPScaledObject name)


def parse_duration(value: object, default: float) -> float:
    """A Go duration ("1m30s", "500ms") or a number of seconds; `default` when unusable."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if value > 0 else default
    if not isinstance(value, str) or not value:
        return default
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return default
    total = sum(float(n) * _UNIT[u] for n, u in parts)
    return total if total > 0 else default


@dataclass(frozen=True, slots=True)
class ServiceRef:
    """A Service port in the route's namespace: `port` (the Service's port) or `port_name`."""

    namespace: str
    name: str
    port: int | None
    port_name: str | None


@dataclass(frozen=True, slots=True)
class Placeholder:
    """``spec.placeholderConfig``: answer at once with a page instead of holding the request."""

    status: int = 503
    refresh: int = 5
    headers: tuple[tuple[str, str], ...] = ()
    content: str = ""  # Go-template-style {{.ServiceName}} etc.; empty: a built-in page
    config_map: tuple[str, str] | None = None  # contentConfigMap (name, key): beats `content`


@dataclass(frozen=True, slots=True)
class Route:
    """One HTTPScaledObject's routing and holding rules."""

    key: Key
    hosts: tuple[str, ...]
    prefixes: tuple[str, ...]
    service: ServiceRef
    wait: float  # how long a request is held when no backend is ready
    response_header_timeout: float | None
    failover: ServiceRef | None = None
    problems: tuple[str, ...] = field(default=())
    headers: tuple[tuple[str, str | None], ...] = ()  # (name, value or None: present)
    placeholder: Placeholder | None = None

    @property
    def name(self) -> str:
        return f"{self.key[0]}/{self.key[1]}"

    def header_rank(self, headers: Mapping[str, str]) -> tuple[int, int] | None:
        """How specifically the request's `headers` (case-insensitive names) match this
        route's: (headers required, of them with a value); None when one does not match."""
        for name, value in self.headers:
            got = headers.get(name)
            if got is None or (value is not None and got != value):
                return None
        return len(self.headers), sum(1 for _, v in self.headers if v is not None)


_NO_HEADERS = (0, 0)


def _service_ref(ns: str, ref: Mapping[str, Any], what: str, problems: list[str]) -> ServiceRef:
    name = str(ref.get("service") or "")
    port, port_name = ref.get("port"), ref.get("portName")
    if not name:
        problems.append(f"{what}.service is required")
    if (port is None) == (not port_name):
        problems.append(f"{what}: set exactly one of port and portName")
    port_int = port if isinstance(port, int) and not isinstance(port, bool) else None
    if port is not None and (port_int is None or not 0 < port_int < 65536):
        problems.append(f"{what}.port must be a port number")
        port_int = None
    return ServiceRef(ns, name, port_int, str(port_name) if port_name else None)


def parse_route(obj: Mapping[str, Any]) -> Route:
    """The route of one HTTPScaledObject (as JSON)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    problems: list[str] = []
    target = _service_ref(ns, spec.get("scaleTargetRef") or {}, "scaleTargetRef", problems)
    hosts = tuple(str(h).lower() for h in spec.get("hosts") or ()) or ("*",)
    prefixes = tuple(str(p) for p in spec.get("pathPrefixes") or ()) or ("/",)
    timeouts = spec.get("timeouts") or {}
    wait = parse_duration(timeouts.get("conditionWait"), DEFAULT_WAIT)
    header = timeouts.get("responseHeader")
    header_timeout = parse_duration(header, 0.0) or None if header else None
    failover = None
    failover_spec = spec.get("coldStartTimeoutFailoverRef")
    if failover_spec:
        failover = _service_ref(ns, failover_spec, "coldStartTimeoutFailoverRef", problems)
        wait = parse_duration(failover_spec.get("timeoutSeconds"), DEFAULT_FAILOVER_WAIT)
    headers = tuple(
        (str(h["name"]), None if h.get("value") is None else str(h["value"]))
        for h in spec.get("headers") or ()
        if isinstance(h, Mapping) and h.get("name")
    )
    return Route(
        (ns, name),
        hosts,
        prefixes,
        target,
        wait,
        header_timeout,
        failover,
        tuple(problems),
        headers,
        _placeholder(spec.get("placeholderConfig")),
    )


def _placeholder(config: object) -> Placeholder | None:
    if not isinstance(config, Mapping) or config.get("enabled") is not True:
        return None
    status = config.get("statusCode")
    refresh = config.get("refreshInterval")
    headers = config.get("headers") if isinstance(config.get("headers"), Mapping) else {}
    return Placeholder(
        status if isinstance(status, int) and 200 <= status < 600 else 503,
        refresh if isinstance(refresh, int) and refresh > 0 else 5,
        tuple((str(k), str(v)) for k, v in (headers or {}).items()),
        str(config.get("content") or ""),
        _config_map(config.get("contentConfigMap")),
    )


def _config_map(ref: object) -> tuple[str, str] | None:
    """``contentConfigMap``: a ConfigMap name (key `PAGE_KEY`) or ``{name, key}``."""
    if isinstance(ref, str) and ref:
        return ref, PAGE_KEY
    if isinstance(ref, Mapping) and ref.get("name"):
        return str(ref["name"]), str(ref.get("key") or PAGE_KEY)
    return None


class RouteTable:
    """Routes by key; `match(host, path)` picks the most specific one."""

    def __init__(self) -> None:
        self._routes: dict[Key, Route] = {}
        self._by_host: dict[str, list[Route]] = {}
        self._patterns: dict[str, tuple[str, ...]] = {}  # Host header -> patterns to try

    def __len__(self) -> int:
        return len(self._routes)

    def routes(self) -> Iterable[Route]:
        return self._routes.values()

    def get(self, key: Key) -> Route | None:
        return self._routes.get(key)

    def put(self, route: Route) -> None:
        self._drop(route.key)
        self._routes[route.key] = route
        for host in route.hosts:
            self._by_host.setdefault(host, []).append(route)

    def delete(self, key: Key) -> Route | None:
        return self._drop(key)

    def _drop(self, key: Key) -> Route | None:
        old = self._routes.pop(key, None)
        if old is not None:
            for host in old.hosts:
                kept = [r for r in self._by_host.get(host, ()) if r.key != key]
                if kept:
                    self._by_host[host] = kept
                else:
                    self._by_host.pop(host, None)
        return old

    def match(self, host: str, path: str, headers: Mapping[str, str] | None = None) -> Route | None:
        """The route of the most specific host pattern that has one for `path` and `headers`:
        the longest path prefix wins, then the most specific header match (more headers, then
        more with values); a route without headers is the fallback of those with some."""
        candidates = self._patterns.get(host)
        if candidates is None:
            candidates = _patterns(host)
            if len(self._patterns) >= MAX_CACHED_HOSTS:
                self._patterns.clear()  # Host headers are the client's to choose: stay bounded
            self._patterns[host] = candidates
        seen: Mapping[str, str] = headers if headers is not None else {}
        for pattern in candidates:  # most specific host first
            best: Route | None = None
            best_rank: tuple[int, int, int] = (-1, -1, -1)
            for route in self._by_host.get(pattern, ()):
                header_rank = route.header_rank(seen)
                if header_rank is None:
                    continue
                for prefix in route.prefixes:
                    rank = (len(prefix), *header_rank)
                    if _path_matches(prefix, path) and rank > best_rank:
                        best, best_rank = route, rank
            if best is not None:
                return best
        return None


def _patterns(host: str) -> tuple[str, ...]:
    """The host patterns a Host header matches, most specific first."""
    host = _strip_port(host.lower())
    parts = host.split(".")
    return (host, *("*." + ".".join(parts[i:]) for i in range(1, len(parts))), "*")


def _strip_port(host: str) -> str:
    if host.startswith("["):  # [::1]:8080
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _path_matches(prefix: str, path: str) -> bool:
    return path.startswith(prefix) or (prefix != "/" and path == prefix.rstrip("/"))
