"""Raw-JSON access to the Kubernetes API.

Tidal reads and writes plain JSON on its hot paths (watches of ScaledObjects, /scale, HPAs,
status) and keeps only the fields it uses: decoding through kubernetes_asyncio's generated models
cost 5x the time and more memory (measured: see docs/design.md). Requests go over one aiohttp
session to the server scaler/kube/connection.py finds (in-cluster or a kubeconfig); only a
kubeconfig whose user runs a credential plugin is served through kubernetes_asyncio's ApiClient
(`LibraryTransport`, imported only then: the library's client package costs ~37 MiB).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypedDict, Unpack

import aiohttp

from scaler.errors import KubeError, NotLeaderError
from scaler.kube.connection import (
    Connection,
    NeedsLibrary,
    from_kubeconfig,
    in_cluster,
    kubeconfig_path,
)

log = logging.getLogger(__name__)

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
# Metadata-only reads (no Secret values ever reach the daemon through these).
PARTIAL_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
PARTIAL_ITEM = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
LEASES = "/apis/coordination.k8s.io/"  # leader election's own writes are never guarded
REQUEST_CONNECTIONS = 32  # requests in flight to the API server (watches have their own pool)
IDLE_CONNECTION_S = 5.0  # an idle request connection is closed after this (aiohttp: 15 s)
LEASE_CONNECTIONS = 2  # Lease reads and renewals, beside the requests (KubeClient.for_leases)

# Which of the transport's connection pools a call uses: ordinary requests, watches (each held
# open for minutes), or Lease traffic (renewals must never queue behind a burst of writes).
Lane = Literal["requests", "watches", "leases"]


class RequestOptions(TypedDict, total=False):
    """What one API call may set besides method and path (JSON in and out by default)."""

    query: Mapping[str, str | int] | None
    body: object
    content_type: str
    accept: str
    timeout: float | None  # seconds for the whole call; default: the client's
    stream: bool  # a watch (held open): sent on the watches' own connections


@dataclass(frozen=True, slots=True)
class Call:
    """One request as a transport sends it."""

    method: str
    path: str
    query: Mapping[str, str | int]
    headers: Mapping[str, str]
    body: object
    timeout: aiohttp.ClientTimeout
    lane: Lane = "requests"


class Transport(Protocol):
    """Sends one request; the response is read (and closed) by the caller."""

    host: str

    async def send(self, call: Call) -> aiohttp.ClientResponse: ...

    async def close(self) -> None: ...


class DirectTransport:
    """aiohttp sessions to the API server, authenticated per `Connection`, one per `Lane`: for
    requests, whose pool is bounded; for watches (each holds its connection for minutes); for
    Lease traffic, so a renewal never waits for a request connection during a burst of writes
    (thousands of new objects' first writes, a takeover's reads) and misses its renew deadline.

    Each TLS connection costs ~300 KiB resident (asyncio's 256 KiB read buffer and OpenSSL's
    state): with a pool of 100 shared by watches and requests, a burst of first writes for 1000
    new objects kept ~90 idle connections (~26 MiB) until they timed out. HTTP/1.1 carries one
    request per connection; `REQUEST_CONNECTIONS` in flight is more than the API server's
    priority-and-fairness seats give one client anyway, and requests beyond it wait their turn.
    """

    def __init__(self, conn: Connection) -> None:
        self.host = conn.host
        self._conn = conn
        self._sessions: dict[Lane, aiohttp.ClientSession] = {}

    @property
    def connection(self) -> Connection:
        return self._conn

    def _open(self, lane: Lane) -> aiohttp.ClientSession:
        session = self._sessions.get(lane)
        if session is None:  # created on the loop that uses it
            ssl = self._conn.ssl_context
            if lane == "watches":
                connector = aiohttp.TCPConnector(ssl=ssl, limit=0)
            elif lane == "leases":  # kept alive: renewals come every retry period (2 s)
                connector = aiohttp.TCPConnector(ssl=ssl, limit=LEASE_CONNECTIONS)
            else:
                connector = aiohttp.TCPConnector(
                    ssl=ssl, limit=REQUEST_CONNECTIONS, keepalive_timeout=IDLE_CONNECTION_S
                )
            session = self._sessions[lane] = aiohttp.ClientSession(connector=connector)
        return session

    async def send(self, call: Call) -> aiohttp.ClientResponse:
        headers = dict(call.headers)
        auth = self._conn.authorization()
        if auth is not None:
            headers["Authorization"] = auth
        return await self._open(call.lane).request(
            call.method,
            self.host + call.path,
            params=[(k, str(v)) for k, v in call.query.items()],
            headers=headers,
            data=None if call.body is None else _encode(call.body),
            timeout=call.timeout,
        )

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()


class LibraryTransport:
    """kubernetes_asyncio's ApiClient: for kubeconfigs whose user runs a credential plugin
    (exec, auth-provider), which only the library implements."""

    def __init__(self, api: Any) -> None:
        self._api = api
        self.host = str(api.configuration.host)

    @classmethod
    async def from_kubeconfig(cls, path: str | None, context: str | None) -> LibraryTransport:
        # Imported here only: the generated client package costs ~37 MiB of RSS.
        from kubernetes_asyncio import client as k8s_client
        from kubernetes_asyncio import config as k8s_config

        cfg = k8s_client.Configuration()
        try:
            await k8s_config.load_kube_config(
                config_file=path, context=context, client_configuration=cfg
            )
        except k8s_config.ConfigException as exc:
            raise KubeError(f"kubeconfig: {exc}") from exc
        return cls(k8s_client.ApiClient(configuration=cfg))

    async def send(self, call: Call) -> aiohttp.ClientResponse:
        resp: aiohttp.ClientResponse = await self._api.call_api(
            call.path,
            call.method,
            query_params=list(call.query.items()),
            header_params=dict(call.headers),
            body=call.body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=call.timeout,
        )
        return resp

    async def close(self) -> None:
        await self._api.close()


def _encode(body: object) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body, separators=(",", ":")).encode()


class KubeClient:
    """Async JSON client over a `Transport` (config, auth, session)."""

    def __init__(
        self, transport: Transport, *, timeout: float = 10.0, lane: Lane = "requests"
    ) -> None:
        self._transport = transport
        self._lane = lane
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._timeout_s = timeout
        # Checked right before every write (not GET, not a Lease): the daemon sets it to the
        # seconds its lease still lets it write (<= 0: not at all), so no write site can forget
        # the check. A write waits for a pool connection at most that long (see `_send`).
        self.write_window: Callable[[], float] | None = None

    @classmethod
    async def from_kubeconfig(
        cls, path: str | None = None, context: str | None = None
    ) -> KubeClient:
        try:
            conn = from_kubeconfig(kubeconfig_path(path), context)
        except NeedsLibrary:
            return cls(await LibraryTransport.from_kubeconfig(path, context))
        return cls(DirectTransport(conn))

    @classmethod
    def in_cluster(cls) -> KubeClient:
        return cls(DirectTransport(in_cluster()))

    @classmethod
    async def auto(cls, kubeconfig: str | None = None) -> KubeClient:
        """Kubeconfig when given (or $KUBECONFIG / ~/.kube/config exist), else in-cluster."""
        if kubeconfig:
            return await cls.from_kubeconfig(kubeconfig)
        try:
            return cls.in_cluster()
        except KubeError:
            return await cls.from_kubeconfig(None)

    def unguarded(self) -> KubeClient:
        """A client on the same connection and credentials with no write guard, for writes every
        replica makes whether or not it leads (its serving certificate's Secret, access
        reviews). Closing the original closes both."""
        return KubeClient(self._transport, timeout=self._timeout_s)

    def for_leases(self) -> KubeClient:
        """A client for leader election and shard membership: the same connection and
        credentials, no write guard, and a small connection pool of its own (direct transport),
        so a Lease renewal never queues behind the requests. Closing the original closes both."""
        return KubeClient(self._transport, timeout=self._timeout_s, lane="leases")

    @property
    def host(self) -> str:
        return self._transport.host

    async def aclose(self) -> None:
        await self._transport.close()

    async def _send(
        self, method: str, path: str, **options: Unpack[RequestOptions]
    ) -> aiohttp.ClientResponse:
        window = self.write_window
        fence: float | None = None
        if method != "GET" and window is not None and not path.startswith(LEASES):
            fence = window()
            if fence <= 0:
                raise NotLeaderError(f"{method} {path}: not written: this replica is not leader")
        headers = {
            "Accept": options.get("accept", "application/json"),
            "Content-Type": options.get("content_type", "application/json"),
        }
        timeout = options.get("timeout")
        query = options.get("query") or {}
        body = options.get("body")
        req_timeout = aiohttp.ClientTimeout(total=timeout) if timeout else self._timeout
        if fence is not None and fence < (req_timeout.total or math.inf):
            # The lease may lapse while the write waits for a pool connection (every one busy
            # in a takeover's burst): it must not go out after that, when another replica may
            # own the object. The wait for a connection is bounded by what the lease has left;
            # once connected, the request is written at once. (Not rounded up to a whole
            # second, as aiohttp does past its ceil threshold.)
            req_timeout = aiohttp.ClientTimeout(
                total=req_timeout.total, connect=fence, ceil_threshold=math.inf
            )
        try:
            lane: Lane = "watches" if options.get("stream", False) else self._lane
            call = Call(method, path, query, headers, body, req_timeout, lane)
            resp = await self._transport.send(call)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if fence is not None and isinstance(exc, aiohttp.ConnectionTimeoutError):
                raise NotLeaderError(
                    f"{method} {path}: not written: the lease lapsed while waiting "
                    f"{fence:.1f} s for a connection"
                ) from exc
            raise KubeError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        return resp

    async def request(self, method: str, path: str, **options: Unpack[RequestOptions]) -> JSON:
        """One call; returns the decoded JSON body or raises KubeError with the HTTP status."""
        resp = await self._send(method, path, **options)
        async with resp:
            try:
                raw = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise KubeError(f"{method} {path}: {type(exc).__name__}") from exc
            if not 200 <= resp.status < 300:
                raise KubeError(_status_message(method, path, resp.status, raw), resp.status)
            if not raw:
                return {}
            data: JSON = json.loads(raw)
            return data

    async def get(self, path: str, *, accept: str = "application/json", **query: str | int) -> JSON:
        return await self.request("GET", path, query=query, accept=accept)

    async def get_or_none(self, path: str) -> JSON | None:
        try:
            return await self.get(path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def merge_patch(self, path: str, body: object) -> JSON:
        return await self.request("PATCH", path, body=body, content_type=MERGE_PATCH)

    async def json_patch(self, path: str, ops: list[JSON]) -> JSON:
        return await self.request("PATCH", path, body=ops, content_type=JSON_PATCH)

    async def create(self, path: str, body: object) -> JSON:
        return await self.request("POST", path, body=body)

    async def replace(self, path: str, body: object) -> JSON:
        return await self.request("PUT", path, body=body)

    async def delete(self, path: str, *, missing_ok: bool = True) -> None:
        try:
            await self.request("DELETE", path)
        except KubeError as exc:
            if not (missing_ok and exc.status == 404):
                raise

    async def watch_lines(
        self,
        path: str,
        query: Mapping[str, str | int],
        *,
        timeout: float,
        accept: str = "application/json",
    ) -> AsyncIterator[JSON]:
        """Stream a watch: yields decoded events until the server ends the stream."""
        resp = await self._send(
            "GET", path, query=query, timeout=timeout, accept=accept, stream=True
        )
        async with resp:
            if resp.status != 200:
                raw = await resp.read()
                raise KubeError(_status_message("WATCH", path, resp.status, raw), resp.status)
            buffer = b""  # the last line's start, until its newline arrives
            try:
                async for chunk in resp.content.iter_any():
                    if b"\n" not in chunk:
                        buffer += chunk
                        continue
                    # One split per chunk: a burst of events in one chunk is not copied once
                    # per event (splitting one line off the rest at a time was quadratic).
                    lines = (buffer + chunk).split(b"\n")
                    buffer = lines.pop()
                    for line in lines:
                        if line.strip():
                            yield json.loads(line)
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise KubeError(f"watch {path}: {type(exc).__name__}") from exc


def _status_message(method: str, path: str, status: int, raw: bytes) -> str:
    message = ""
    try:
        message = str(json.loads(raw).get("message", ""))
    except (ValueError, AttributeError):
        message = raw[:200].decode(errors="replace")
    return f"{method} {path}: HTTP {status}: {message}"
