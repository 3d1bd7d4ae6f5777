"""Shared connections for scalers: one client per (kind, endpoint, credential fingerprint).

A scaler acquires a `Lease` on its first sample and releases it in ``aclose()``. The client is
created by the first acquirer's factory, shared by reference count, and closed when the last
lease is released. Keys carry a *fingerprint* of the credentials (a hash), never the secret.

TLS: `TlsSettings` is a trigger's client TLS material (PEM text as delivered by a
TriggerAuthentication, never a user-supplied file path). Building a context costs ~25 ms of CPU
(loading the system CA store), and a failing object is rebuilt every 30 s, so contexts are shared
through `TLS_CONTEXTS`: one per distinct material (keyed by its digest, never the text), bounded
and dropped when unused. `TlsSettings.check()` validates the material cheaply (without the system
store) for a scaler's synchronous validation; `await TlsSettings.context()` hands out the shared
context and builds a missing one in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import ssl
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from scaler.contract import EndpointSource, PodSource
    from scaler.params import Config

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ClientKey:
    """What makes two scalers share a client. `fingerprint` is a hash, never a secret."""

    kind: str
    endpoint: str
    fingerprint: str = ""


def fingerprint(*parts: object) -> str:
    """A stable, one-way digest of credential material (or any settings) for a ClientKey."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(repr(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


class _Entry:
    __slots__ = ("close", "refs", "task")

    def __init__(self, task: asyncio.Future[Any], close: Callable[[Any], Awaitable[None]]) -> None:
        self.task = task
        self.close = close
        self.refs = 0


class Lease(Generic[T]):
    """A reference to a shared client; `release()` once (further calls do nothing)."""

    __slots__ = ("_entry", "_key", "_pool", "client")

    def __init__(self, pool: ClientPool, key: ClientKey, entry: _Entry, client: T) -> None:
        self._pool: ClientPool | None = pool
        self._key = key
        self._entry = entry
        self.client = client

    @property
    def key(self) -> ClientKey:
        return self._key

    async def release(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool._release(self._key, self._entry)


class ClientPool:
    """Reference-counted shared clients; safe when many scalers acquire one key at once."""

    def __init__(self) -> None:
        self._entries: dict[ClientKey, _Entry] = {}
        self._closing: set[asyncio.Task[None]] = set()
        # A Service's ready endpoints (scaler.contract.EndpointSource), when the daemon runs
        # with a cluster: None in tools that build scalers without one (tidal check, tests).
        self.endpoints: EndpointSource | None = None
        self.pods: PodSource | None = None  # pods by label selector (scaler.kube.pods)

    def __len__(self) -> int:
        return len(self._entries)

    def refs(self, key: ClientKey) -> int:
        entry = self._entries.get(key)
        return 0 if entry is None else entry.refs

    async def acquire(
        self,
        key: ClientKey,
        factory: Callable[[], Awaitable[T]],
        close: Callable[[T], Awaitable[None]],
    ) -> Lease[T]:
        """The shared client for `key`, created by `factory()` if there is none yet.

        A failed creation is reported to every concurrent acquirer and forgotten, so the next
        acquire tries again.
        """
        entry = self._entries.get(key)
        if entry is None:
            entry = _Entry(asyncio.ensure_future(factory()), close)
            self._entries[key] = entry
        entry.refs += 1
        try:
            client = await asyncio.shield(entry.task)
        except BaseException:
            entry.refs -= 1
            if self._entries.get(key) is entry:
                task = entry.task
                if task.done() and (task.cancelled() or task.exception() is not None):
                    del self._entries[key]  # creation failed: the next acquire tries again
                elif entry.refs == 0:
                    del self._entries[key]  # the last waiter gave up: close once created
                    self._close_later(key, entry)
            raise
        return Lease(self, key, entry, client)

    async def _release(self, key: ClientKey, entry: _Entry) -> None:
        if entry.refs <= 0:  # aclose() closed it already: a late release closes nothing again
            return
        entry.refs -= 1
        if entry.refs > 0:
            return
        if self._entries.get(key) is entry:
            del self._entries[key]
        await self._close(key, entry)

    def _close_later(self, key: ClientKey, entry: _Entry) -> None:
        task = asyncio.ensure_future(self._close(key, entry))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close(key: ClientKey, entry: _Entry) -> None:
        try:
            client = await entry.task
        except Exception:  # nothing was created, nothing to close
            return
        try:
            await entry.close(client)
        except Exception as exc:  # a failed close must not break the caller
            log.warning(
                "closing a shared client failed",
                extra={"client_kind": key.kind, "endpoint": key.endpoint, "error": repr(exc)},
            )

    async def aclose(self) -> None:
        """Close every client (daemon shutdown); leases still held become no-ops."""
        entries, self._entries = list(self._entries.items()), {}
        for key, entry in entries:
            entry.refs = 0
            await self._close(key, entry)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def ssl_context_from_pem(
    *,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    key_password: str | None = None,
    verify: bool = True,
) -> ssl.SSLContext:
    """A NEW client TLS context from PEM text (CA bundle, client certificate and key): ~25 ms of
    CPU, so share contexts through `TlsSettings.context()` instead of calling this per scaler.

    `verify=False` is KEDA's ``unsafeSsl``: no certificate or host name check.
    Raises ValueError (without the PEM content) when the material does not load.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)  # the system CA store: the cost
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    _load_material(ctx, ca, cert, key, key_password)
    return ctx


def _load_material(
    ctx: ssl.SSLContext, ca: str | None, cert: str | None, key: str | None, password: str | None
) -> None:
    if ca:
        try:
            ctx.load_verify_locations(cadata=ca)
        except (ssl.SSLError, ValueError, TypeError) as exc:  # TypeError: non-ASCII PEM text
            raise ValueError(f"the CA certificate does not load ({type(exc).__name__})") from None
    if cert or key:
        if not (cert and key):
            raise ValueError("a client certificate needs both cert and key")
        load_client_cert(ctx, cert, key, password)


def load_client_cert(ctx: ssl.SSLContext, cert: str, key: str, password: str | None = None) -> None:
    """Load a client certificate and key given as PEM text into `ctx`; ValueError (without the
    PEM content) when they do not load."""
    # The ssl module loads a chain only from files. On Linux they are anonymous memory (memfd,
    # opened through /proc/self/fd): nothing touches a filesystem, so a read-only root works.
    # Elsewhere: private 0600 files in the temp dir ($TMPDIR), removed at once.
    try:
        if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
            _load_from_memory(ctx, cert, key, password)
        else:
            _load_from_temp_files(ctx, cert, key, password)
    except (ssl.SSLError, ValueError, OSError, TypeError) as exc:
        raise ValueError(
            f"the client certificate or key does not load ({type(exc).__name__})"
        ) from None


def _load_from_memory(ctx: ssl.SSLContext, cert: str, key: str, password: str | None) -> None:
    fds: list[int] = []
    try:
        for text in (cert, key):
            fd = os.memfd_create("tidal-tls", os.MFD_CLOEXEC)
            fds.append(fd)
            data = memoryview(text.encode())
            while data:
                data = data[os.write(fd, data) :]
        ctx.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}", password)
    finally:
        for fd in fds:
            os.close(fd)


def _load_from_temp_files(ctx: ssl.SSLContext, cert: str, key: str, password: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="tidal-tls-") as tmp:
        paths = (os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem"))
        try:
            for path, text in zip(paths, (cert, key), strict=True):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(text)
            ctx.load_cert_chain(paths[0], paths[1], password=password)
        finally:
            for path in paths:
                with contextlib.suppress(OSError):
                    os.unlink(path)


@dataclass(frozen=True, slots=True, repr=False)
class TlsSettings:
    """One trigger's client TLS material (PEM text) and whether to verify the server.

    Equal material means one shared context (`context()`); the repr and `fingerprint` (a
    digest) show no secret.
    """

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    key_password: str | None = None
    verify: bool = True
    fingerprint: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        digest = fingerprint("tls", self.ca, self.cert, self.key, self.key_password, self.verify)
        object.__setattr__(self, "fingerprint", digest)

    @classmethod
    def from_config(cls, config: Config, *, client_cert: bool = True) -> TlsSettings:
        """From the conventional trigger parameters ``ca``, ``cert``, ``key``, ``keyPassword``
        (usually from a TriggerAuthentication) and ``unsafeSsl``; `client_cert=False` ignores
        ``cert``/``key``/``keyPassword`` (the HTTP scalers use them only with ``authModes: tls``).
        """
        return cls(
            ca=config.opt_str("ca"),
            cert=config.opt_str("cert") if client_cert else None,
            key=config.opt_str("key") if client_cert else None,
            key_password=config.opt_str("keyPassword") if client_cert else None,
            verify=not config.get_bool("unsafeSsl"),
        )

    def __repr__(self) -> str:
        return (
            f"TlsSettings(ca={self.ca is not None}, cert={self.cert is not None},"
            f" verify={self.verify})"
        )

    def check(self) -> None:
        """Raise ValueError (without the PEM content) if the material does not load; cheap
        (well under a millisecond: no system CA store), for synchronous validation."""
        if TLS_CONTEXTS.cached(self):
            return
        _load_material(
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), self.ca, self.cert, self.key, self.key_password
        )

    async def context(self) -> ssl.SSLContext:
        """The shared context for this material; a missing one is built off the event loop."""
        return await TLS_CONTEXTS.get(self)

    def context_now(self) -> ssl.SSLContext:
        """The shared context, built on the calling thread when missing (synchronous callers)."""
        return TLS_CONTEXTS.get_now(self)


class TlsContextCache:
    """Client TLS contexts by the digest of their material (never the material itself).

    Holds at most `maxsize` contexts (least recently used out first) and drops those unused for
    `idle` seconds; a context dropped while clients still use it is handed out again as long as
    it lives (weak reference), so equal material never means two contexts at once. Concurrent
    requests for a missing context share one build. Thread-safe.
    """

    def __init__(
        self,
        maxsize: int = 256,
        idle: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.maxsize = maxsize
        self.idle = idle
        self._clock = clock
        self._entries: OrderedDict[str, tuple[ssl.SSLContext, float]] = OrderedDict()
        self._alive: weakref.WeakValueDictionary[str, ssl.SSLContext] = (
            weakref.WeakValueDictionary()
        )
        self._building: dict[str, asyncio.Future[ssl.SSLContext]] = {}
        self._lock = threading.Lock()
        self.builds = 0  # contexts built (tests and benchmarks read it)

    def __len__(self) -> int:
        """Contexts held (not counting those only clients still hold)."""
        with self._lock:
            self._expire(self._clock())
            return len(self._entries)

    def clear(self) -> None:
        """Forget every context and reset `builds`."""
        with self._lock:
            self._entries.clear()
            self._alive.clear()
            self.builds = 0

    def cached(self, tls: TlsSettings) -> bool:
        """Whether a context for this material exists (held, or still used by a client)."""
        return self._lookup(tls.fingerprint) is not None

    def get_now(self, tls: TlsSettings) -> ssl.SSLContext:
        ctx = self._lookup(tls.fingerprint)
        return ctx if ctx is not None else self._add(tls.fingerprint, self._build(tls))

    async def get(self, tls: TlsSettings) -> ssl.SSLContext:
        ctx = self._lookup(tls.fingerprint)
        if ctx is not None:
            return ctx
        loop = asyncio.get_running_loop()
        pending = self._building.get(tls.fingerprint)
        if pending is None or pending.get_loop() is not loop:
            pending = loop.create_task(self._build_off_loop(tls))
            self._building[tls.fingerprint] = pending
            pending.add_done_callback(lambda done: self._built(tls.fingerprint, done))
        # Shielded: a cancelled waiter leaves the build running for the others (and the cache).
        return await asyncio.shield(pending)

    async def _build_off_loop(self, tls: TlsSettings) -> ssl.SSLContext:
        return self._add(tls.fingerprint, await asyncio.to_thread(self._build, tls))

    def _built(self, digest: str, done: asyncio.Future[ssl.SSLContext]) -> None:
        if self._building.get(digest) is done:
            del self._building[digest]
        if not done.cancelled():
            done.exception()  # retrieved: a failure no waiter awaited is not "never retrieved"

    def _build(self, tls: TlsSettings) -> ssl.SSLContext:
        ctx = ssl_context_from_pem(
            ca=tls.ca, cert=tls.cert, key=tls.key, key_password=tls.key_password, verify=tls.verify
        )
        with self._lock:
            self.builds += 1
        return ctx

    def _lookup(self, digest: str) -> ssl.SSLContext | None:
        with self._lock:
            ctx = self._alive.get(digest)
            if ctx is not None:
                self._hold(digest, ctx)
            return ctx

    def _add(self, digest: str, ctx: ssl.SSLContext) -> ssl.SSLContext:
        with self._lock:
            # Built twice at once (a synchronous and an asynchronous caller): keep the first.
            ctx = self._alive.setdefault(digest, ctx)
            self._hold(digest, ctx)
            return ctx

    def _hold(self, digest: str, ctx: ssl.SSLContext) -> None:
        now = self._clock()
        self._entries[digest] = (ctx, now)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
        self._expire(now)

    def _expire(self, now: float) -> None:
        # Least recently used first, so the idle ones are at the front.
        while self._entries:
            _, (_, used) = next(iter(self._entries.items()))
            if now - used <= self.idle:
                break
            self._entries.popitem(last=False)


TLS_CONTEXTS = TlsContextCache()


def ssl_context_from_config(config: Config) -> ssl.SSLContext:
    """The shared TLS context for the conventional trigger parameters ``ca``, ``cert``, ``key``,
    ``keyPassword`` and ``unsafeSsl`` (see `TlsSettings.from_config`); built on the calling
    thread when missing: in async code prefer ``await TlsSettings.from_config(c).context()``."""
    return TlsSettings.from_config(config).context_now()
