"""gRPC channels and calls for KEDA's external scaler protocol (``externalscaler.proto``).

One `grpc.aio` channel per (scalerAddress, TLS settings) is shared by every trigger through
the `ClientPool`, as KEDA shares one ``grpc.ClientConn`` per connection settings; HTTP/2
multiplexes their calls and streams. Every unary call carries a deadline (the trigger's
timeout): an unreachable, refusing or hung scaler is a `ScalerError` within it, never a value.

TLS follows KEDA: the channel uses TLS when ``enableTLS`` is true, or a CA (``caCert``) or a
client certificate (``tlsClientCert``/``tlsClientKey``) is given; otherwise it is plaintext.
gRPC's TLS stack cannot skip verification, so ``unsafeSsl`` pins what the server presents:
the certificates of one TLS handshake made without verification (bounded by the timeout) are
trusted for that channel, and the host name is checked against the leaf's own name. That
accepts any certificate the server shows (KEDA's ``InsecureSkipVerify``), but a certificate
that changes (a rotation) breaks the channel until it is rebuilt: the next build after the
trigger's errors opens a new one.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio
from cryptography import x509
from cryptography.x509.oid import NameOID

from scaler.clients import ClientKey, ClientPool, TlsSettings
from scaler.errors import ScalerError
from scaler.lease_slot import LeaseSlot
from scalers.external import externalscaler_pb2 as pb

log = logging.getLogger(__name__)

SERVICE = "/externalscaler.ExternalScaler/"
KIND = "external-grpc"
# KEDA's service config: spread calls over every address the name resolves to. A channel that
# lost its scaler retries the connection with backoff; gRPC's default cap (120 s) would keep
# failing polls that long after the scaler is back: capped like Tidal's push loop (30 s).
_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.service_config", '{"loadBalancingConfig": [{"round_robin": {}}]}'),
    ("grpc.enable_retries", 0),
    ("grpc.max_reconnect_backoff_ms", 30_000),
)

Req = TypeVar("Req")
Resp = TypeVar("Resp")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where an external scaler listens and how to reach it; `tls` None means plaintext."""

    address: str
    tls: TlsSettings | None

    @property
    def key(self) -> ClientKey:
        return ClientKey(KIND, self.address, "" if self.tls is None else self.tls.fingerprint)

    def describe(self) -> str:
        return f"external scaler {self.address}"


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6; a ``dns:///`` prefix is allowed) → (host, port);
    ValueError when it is not one."""
    rest = address.removeprefix("dns:///").removeprefix("dns:")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"scalerAddress '{address}' is not host:port")
    return host.strip("[]"), int(port)


def call_error(endpoint: Endpoint, method: str, exc: BaseException) -> ScalerError:
    """A failed call as the project's error, naming the scaler, the method and the gRPC code."""
    if isinstance(exc, grpc.aio.AioRpcError):
        code = exc.code().name if exc.code() is not None else "UNKNOWN"
        detail = (exc.details() or "").splitlines()[0][:200] if exc.details() else ""
        return ScalerError(f"{endpoint.describe()}: {method} failed: {code} {detail}".rstrip())
    if isinstance(exc, TimeoutError):
        return ScalerError(f"{endpoint.describe()}: {method} failed: no answer in time")
    return ScalerError(f"{endpoint.describe()}: {method} failed: {type(exc).__name__}")


async def _pinned_roots(endpoint: Endpoint, timeout: float) -> tuple[bytes, str]:
    """``unsafeSsl``: the server's certificate chain from an unverified handshake, and the name
    its leaf carries (to check the host name against)."""
    host, port = split_host_port(endpoint.address)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ctx, server_hostname=host, family=socket.AF_UNSPEC
            )
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise call_error(endpoint, "TLS handshake", exc) from exc
    try:
        sslobj = writer.get_extra_info("ssl_object")
        leaf = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    finally:
        writer.close()
        del reader
    if not leaf:
        raise ScalerError(f"{endpoint.describe()}: the server presented no certificate")
    cert = x509.load_der_x509_certificate(leaf)
    pem = ssl.DER_cert_to_PEM_cert(leaf).encode()
    return pem, _cert_name(cert, host)


def _cert_name(cert: x509.Certificate, fallback: str) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
        if names:
            return str(names[0])
        ips = san.get_values_for_type(x509.IPAddress)
        if ips:
            return str(ips[0])
    except x509.ExtensionNotFound:
        pass
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else fallback


async def credentials(
    endpoint: Endpoint, timeout: float
) -> tuple[grpc.ChannelCredentials | None, tuple[tuple[str, Any], ...]]:
    """The channel credentials (None: plaintext) and extra channel options for `endpoint`."""
    tls = endpoint.tls
    if tls is None:
        return None, ()
    key = tls.key.encode() if tls.key else None
    chain = tls.cert.encode() if tls.cert else None
    if not tls.verify:
        roots, name = await _pinned_roots(endpoint, timeout)
        creds = grpc.ssl_channel_credentials(roots, key, chain)
        return creds, (("grpc.ssl_target_name_override", name),)
    ca = tls.ca.encode() if tls.ca else None  # None: the system's roots
    return grpc.ssl_channel_credentials(ca, key, chain), ()


async def open_channel(endpoint: Endpoint, timeout: float) -> grpc.aio.Channel:
    """A new channel to `endpoint` (`unsafeSsl` makes one TLS handshake, within `timeout`)."""
    creds, extra = await credentials(endpoint, timeout)
    options = _OPTIONS + extra
    if creds is None:
        return grpc.aio.insecure_channel(endpoint.address, options=options)
    return grpc.aio.secure_channel(endpoint.address, creds, options=options)


async def _close(channel: grpc.aio.Channel) -> None:
    await channel.close(grace=None)


async def call_unary(
    channel: grpc.aio.Channel,
    endpoint: Endpoint,
    method: str,
    request: Any,
    response: Callable[[bytes], Resp],
    timeout: float,
) -> Resp:
    """One unary call with a deadline of `timeout` seconds; ScalerError on any failure."""
    multi: grpc.aio.UnaryUnaryMultiCallable[Any, Resp] = channel.unary_unary(
        SERVICE + method, request_serializer=_serialize, response_deserializer=response
    )
    try:
        async with asyncio.timeout(timeout + 1.0):  # the deadline's backstop
            return await multi(request, timeout=timeout)
    except (grpc.aio.AioRpcError, TimeoutError) as exc:
        raise call_error(endpoint, method, exc) from exc


def _serialize(message: Any) -> bytes:
    data = message.SerializeToString()
    assert isinstance(data, bytes)
    return data


class ExternalChannel:
    """One trigger's handle on the shared channel of its endpoint (acquired on first use)."""

    def __init__(self, endpoint: Endpoint, pool: ClientPool, timeout: float) -> None:
        self.endpoint = endpoint
        self._timeout = timeout
        self._channel: LeaseSlot[grpc.aio.Channel] = LeaseSlot(
            pool, endpoint.describe(), endpoint.key, lambda: open_channel(endpoint, timeout), _close
        )

    async def channel(self) -> grpc.aio.Channel:
        try:
            return await self._channel.take()
        except ScalerError:
            raise
        except (grpc.RpcError, ValueError, OSError) as exc:
            raise call_error(self.endpoint, "connect", exc) from exc

    async def unary(
        self, method: str, request: Any, response: Callable[[bytes], Resp], timeout: float
    ) -> Resp:
        """One unary call on the shared channel (see `call_unary`)."""
        channel = await self.channel()
        return await call_unary(channel, self.endpoint, method, request, response, timeout)

    async def stream_is_active(
        self, ref: pb.ScaledObjectRef
    ) -> grpc.aio.UnaryStreamCall[Any, pb.IsActiveResponse]:
        """A StreamIsActive call (no deadline: it lasts as long as the subscription)."""
        channel = await self.channel()
        callable_ = channel.unary_stream(
            SERVICE + "StreamIsActive",
            request_serializer=_serialize,
            response_deserializer=pb.IsActiveResponse.FromString,
        )
        return callable_(ref)

    async def aclose(self) -> None:
        await self._channel.release()
