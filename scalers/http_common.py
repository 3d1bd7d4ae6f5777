"""What the HTTP scalers (prometheus, metrics-api) share: auth parameters, sessions, one GET.

Auth follows KEDA's ``authModes`` (``authMode`` for metrics-api): ``basic`` (username,
password), ``bearer`` (bearerToken, alias token), ``apiKey`` (apiKey; method header|query and
keyParamName), ``tls`` (ca, cert, key, keyPassword) and ``custom`` (customAuthHeader,
customAuthValue). Credentials come from TriggerAuthentication params only.

One aiohttp ClientSession is shared per (scheme://host:port, credential and TLS fingerprint)
through the ClientPool. Redirects are never followed (credentials must not travel to another
place): a 3xx answer is an error like any other non-2xx. Failures map to ScalerError
(connection, timeout) or QueryError (the server answered, but not with a usable value).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from scaler.clients import ClientKey, ClientPool, TlsSettings, fingerprint
from scaler.contract import TriggerContext
from scaler.errors import QueryError, ScalerError
from scaler.lease_slot import LeaseSlot
from scaler.params import Config, Param, redact

AUTH_MODES = ("apiKey", "basic", "bearer", "tls", "custom")

HTTP_PARAMS: tuple[Param, ...] = (
    Param(
        "authModes", "list", aliases=("authMode",), sources=("metadata", "auth"), allowed=AUTH_MODES
    ),
    Param("username", sources=("auth",)),
    Param("password", sources=("auth",), secret=True),
    Param("bearerToken", aliases=("token",), sources=("auth",), secret=True),
    Param("apiKey", sources=("auth",), secret=True),
    Param("method", sources=("metadata",), default="header", allowed=("header", "query")),
    Param("keyParamName", sources=("metadata",)),
    Param("customAuthHeader", sources=("auth",)),
    Param("customAuthValue", sources=("auth",), secret=True),
    Param("ca", sources=("auth",)),
    Param("cert", sources=("auth",)),
    Param("key", sources=("auth",), secret=True),
    Param("keyPassword", sources=("auth",), secret=True),
    Param("unsafeSsl", "bool", sources=("metadata",), default=False),
    Param("timeout", "duration", sources=("metadata",), above=0, doc="ms, or 30s / 1m"),
)


def validate_url(name: str, value: str) -> list[str]:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"parameter '{name}' value '{safe_url(value)}' must be an http or https URL"]
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return [f"parameter '{name}' value '{safe_url(value)}' has an invalid port"]
    return []


def validate_auth(config: Config) -> list[str]:
    """KEDA's checks: each mode needs its credentials; basic and bearer exclude each other."""
    modes = set(config.get_list("authModes"))
    problems: list[str] = []
    if {"basic", "bearer"} <= modes:
        problems.append(
            f"parameter 'authModes' value '{','.join(config.get_list('authModes'))}'"
            " must contain only one of [bearer basic]"
        )
    needs = {
        "basic": (("username",), "no username given"),
        "bearer": (("bearerToken",), "no bearer token provided"),
        "apiKey": (("apiKey",), "no apikey provided"),
        "tls": (("cert", "key"), "no cert/key given"),
        "custom": (("customAuthHeader", "customAuthValue"), "no custom auth header or value given"),
    }
    for mode in AUTH_MODES:
        if mode in modes:
            names, message = needs[mode]
            if any(config.opt_str(n) is None for n in names):
                problems.append(f"{message} (authModes contains '{mode}')")
    if "tls" in modes or config.opt_str("ca"):
        try:
            _tls_settings(config).check()
        except ValueError as exc:
            problems.append(f"invalid TLS settings: {exc}")
    return problems


def safe_url(url: str) -> str:
    """`url` without userinfo or query string, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _tls_settings(config: Config) -> TlsSettings:
    return TlsSettings.from_config(config, client_cert="tls" in config.get_list("authModes"))


@dataclass(frozen=True, slots=True, repr=False)
class HttpAuth:
    """Headers and query parameters a request carries, plus the TLS settings (True: aiohttp's
    default verified context, False: no verification, or our own CA / client certificate)."""

    headers: Mapping[str, str]
    query: Mapping[str, str]
    ssl: TlsSettings | bool
    fingerprint: str
    secrets: tuple[str, ...]

    def __repr__(self) -> str:
        return f"HttpAuth(headers={sorted(self.headers)}, query={sorted(self.query)})"

    @classmethod
    def from_config(cls, config: Config, default_key_param: tuple[str, str]) -> HttpAuth:
        modes = set(config.get_list("authModes"))
        headers: dict[str, str] = {}
        query: dict[str, str] = {}
        if "basic" in modes:
            headers["Authorization"] = aiohttp.encode_basic_auth(
                config.get_str("username"), config.opt_str("password") or ""
            )
        if "bearer" in modes:
            headers["Authorization"] = f"Bearer {config.get_str('bearerToken')}"
        if "custom" in modes:
            headers[config.get_str("customAuthHeader")] = config.get_str("customAuthValue")
        if "apiKey" in modes:
            method = config.get_str("method")
            header_default, query_default = default_key_param
            if method == "query":
                query[config.opt_str("keyParamName") or query_default] = config.get_str("apiKey")
            else:
                headers[config.opt_str("keyParamName") or header_default] = config.get_str("apiKey")
        tls: TlsSettings | bool = True
        if "tls" in modes or config.opt_str("ca"):
            tls = _tls_settings(config)
        elif config.get_bool("unsafeSsl"):
            tls = False
        tls_material = tls if isinstance(tls, bool) else tls.fingerprint
        material = (sorted(headers.items()), sorted(query.items()), tls_material)
        return cls(headers, query, tls, fingerprint(*material), config.secret_values())


async def _new_session(kind: str, tls: TlsSettings | bool) -> aiohttp.ClientSession:
    if isinstance(tls, bool):
        context: ssl.SSLContext | bool = tls
    else:
        try:
            context = await tls.context()  # shared; a missing one is built off the event loop
        except ValueError as exc:
            raise ScalerError(f"{kind}: invalid TLS settings: {exc}") from None
    connector = aiohttp.TCPConnector(ssl=context, limit=20)
    return aiohttp.ClientSession(connector=connector, trust_env=False)


async def _close_session(session: aiohttp.ClientSession) -> None:
    await session.close()


class HttpSource:
    """One scaler's access to an HTTP endpoint through a shared session."""

    def __init__(
        self, kind: str, url: str, auth: HttpAuth, timeout: float, clients: ClientPool
    ) -> None:
        parts = urlsplit(url)
        self.kind = kind
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base = f"{parts.scheme}://{parts.hostname}:{port}"
        self.auth = auth
        self.timeout = timeout
        self._session: LeaseSlot[aiohttp.ClientSession] = LeaseSlot(
            clients,
            f"{kind} {self.base}",
            ClientKey("http", self.base, auth.fingerprint),
            lambda: _new_session(kind, auth.ssl),
            _close_session,
        )

    async def get(
        self,
        url: str,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """The body of a 2xx answer to GET `url`; ScalerError / QueryError otherwise."""
        shown = safe_url(url)
        session = await self._session.take()
        query = {**(params or {}), **self.auth.query}
        all_headers = {**(headers or {}), **self.auth.headers}
        try:
            async with session.get(
                url,
                params=query or None,
                headers=all_headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                body = await resp.read()
                status = resp.status
        except TimeoutError as exc:
            raise ScalerError(
                f"{self.kind} GET {shown}: timed out after {self.timeout:g} s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise ScalerError(
                self._redact(f"{self.kind} GET {shown}: {type(exc).__name__}: {exc}")
            ) from exc
        if not 200 <= status < 300:
            hint = " (redirects are not followed)" if 300 <= status < 400 else ""
            snippet = body[:300].decode("utf-8", "replace").strip()
            raise QueryError(
                self._redact(f"{self.kind} GET {shown}: HTTP {status}{hint}: {snippet}")
            )
        return body

    def _redact(self, text: str) -> str:
        return redact(text, self.auth.secrets)

    async def aclose(self) -> None:
        await self._session.release()


def timeout_of(config: Config, trigger: TriggerContext) -> float:
    return config.opt_duration("timeout") or trigger.timeout


def json_path(document: Any, path: str) -> Any:
    """A GJSON-like dotted path: ``a.b.0.c``; ``\\.`` escapes a dot; ``#`` is an array's length.

    Raises KeyError naming the first segment that does not resolve.
    """
    node = document
    for segment in _split_path(path):
        if isinstance(node, list):
            if segment == "#":
                node = len(node)
            elif segment.isdigit() and int(segment) < len(node):
                node = node[int(segment)]
            else:
                raise KeyError(segment)
        elif isinstance(node, dict) and segment in node:
            node = node[segment]
        else:
            raise KeyError(segment)
    return node


def _split_path(path: str) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    escaped = False
    for char in path:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ".":
            out.append("".join(current))
            current = []
        else:
            current.append(char)
    out.append("".join(current))
    return out
