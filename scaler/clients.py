"""Shared connections for scalers: one client per (kind, endpoint, credential fingerprint).

A scaler acquires a `Lease` on its first sample and releases it in ``aclose()``. The client is
created by the first acquirer's factory, shared by reference count, and closed when the last
lease is released. Keys carry a *fingerprint* of the credentials (a hash), never the secret.

`ssl_context_from_pem` builds TLS contexts from PEM text as delivered by TriggerAuthentication
(never from a user-supplied file path).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
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
    """A client TLS context from PEM text (CA bundle, client certificate and key).

    `verify=False` is KEDA's ``unsafeSsl``: no certificate or host name check.
    Raises ValueError (without the PEM content) when the material does not load.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if ca:
        try:
            ctx.load_verify_locations(cadata=ca)
        except (ssl.SSLError, ValueError) as exc:
            raise ValueError(f"the CA certificate does not load ({type(exc).__name__})") from None
    if cert or key:
        if not (cert and key):
            raise ValueError("a client certificate needs both cert and key")
        _load_cert_chain(ctx, cert, key, key_password)
    return ctx


def _load_cert_chain(ctx: ssl.SSLContext, cert: str, key: str, password: str | None) -> None:
    # The ssl module loads a chain only from files: write private 0600 files, load, remove.
    with tempfile.TemporaryDirectory(prefix="tidal-tls-") as tmp:
        cert_path = os.path.join(tmp, "cert.pem")
        key_path = os.path.join(tmp, "key.pem")
        for path, text in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
        try:
            ctx.load_cert_chain(cert_path, key_path, password=password)
        except (ssl.SSLError, ValueError, OSError) as exc:
            raise ValueError(
                f"the client certificate or key does not load ({type(exc).__name__})"
            ) from None
        finally:
            for path in (cert_path, key_path):
                with contextlib.suppress(OSError):
                    os.unlink(path)


def ssl_context_from_config(config: Config) -> ssl.SSLContext:
    """TLS from the conventional trigger parameters ``ca``, ``cert``, ``key``, ``keyPassword``
    (PEM text, usually from a TriggerAuthentication) and ``unsafeSsl``."""
    return ssl_context_from_pem(
        ca=config.opt_str("ca"),
        cert=config.opt_str("cert"),
        key=config.opt_str("key"),
        key_password=config.opt_str("keyPassword"),
        verify=not config.get_bool("unsafeSsl"),
    )
