"""The `postgresql` trigger: the number a PostgreSQL query returns.

Parameters are KEDA's: ``query``, ``targetQueryValue`` (required and not 0, as KEDA checks),
``activationTargetQueryValue`` (default 0); the connection either as one libpq connection
string, ``connection`` from a TriggerAuthentication or ``connectionFromEnv`` (both the URL
form ``postgresql://user:pw@host:5432/db?sslmode=disable`` and the keyword form
``host=... port=... dbname=...``), or as fields ``host``, ``port``, ``userName``, ``dbName``,
``sslmode`` (TriggerAuthentication first, then metadata) with ``password`` from a
TriggerAuthentication or ``passwordFromEnv``. KEDA's metric name: ``s<N>-postgresql``. A
connection string naming a file (``sslrootcert=<path>``, ``sslkey``, ``passfile``, ...) is
refused: Tidal never reads files from user-supplied paths (``sslrootcert=system`` is allowed).

The query must return one row with one non-NULL numeric column (see `scalers.sql.hub`); active
when the value is strictly greater than ``activationTargetQueryValue``. Queries of one target
share a hub (a few connections, coalesced rounds, the timeout).

psycopg 3 speaks to the server: its async connections are native asyncio, it parses libpq's
two connection string forms exactly as libpq does (KEDA's pgx accepts the same forms), and it
ships type hints. Connections are autocommit (no transaction left open between polls) and
never prepare statements (safe behind PgBouncer in transaction mode). A query that outlives the
timeout is cancelled on the server (psycopg sends PostgreSQL's cancel request) and its
connection closed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from scaler.clients import ClientKey, ClientPool, fingerprint
from scaler.contract import MetricSpec, TriggerContext, metric_name
from scaler.errors import QueryError, ScalerError
from scaler.params import Config, Param, redact
from scalers.sql.hub import Rows, SqlConnection, SqlScaler

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# libpq keywords whose value is a path the daemon would read (or write: sslkeylogfile).
FILE_KEYWORDS = frozenset(
    {
        "passfile",
        "service",
        "sslcert",
        "sslkey",
        "sslrootcert",
        "sslcrl",
        "sslcrldir",
        "sslkeylogfile",
    }
)
_FIELDS = (("host", "host"), ("port", "port"), ("userName", "user"), ("dbName", "dbname"))
_FIELD_SOURCES: tuple[Any, ...] = ("auth", "metadata")


def _conninfo(config: Config) -> dict[str, str]:
    """libpq keywords from the connection string or the fields (ValueError on a bad string)."""
    connection = config.opt_str("connection")
    if connection is not None:
        try:
            parsed = conninfo_to_dict(connection)
        except psycopg.ProgrammingError as exc:
            detail = redact(str(exc), config.secret_values())
            raise ValueError(f"the connection string does not parse: {detail}") from None
        params = {k: str(v) for k, v in parsed.items() if v is not None}
        files = sorted(k for k, v in params.items() if k in FILE_KEYWORDS and v != "system")
        if files:
            raise ValueError(
                "the connection string names files ("
                + ", ".join(files)
                + "): Tidal never reads files from user-supplied paths"
                " (sslrootcert=system, the system CAs, is allowed)"
            )
        return params
    out = {keyword: config.get_str(name) for name, keyword in _FIELDS}
    out["sslmode"] = config.get_str("sslmode")
    password = config.opt_str("password")
    if password is not None:
        out["password"] = password
    return out


@dataclass(frozen=True, slots=True, repr=False)
class PostgresTarget:
    """One server, database and credential; repr shows no secret."""

    params: Mapping[str, str]
    timeout: float
    kind: str = field(default="postgresql", init=False)

    @property
    def endpoint(self) -> str:
        host = self.params.get("host") or self.params.get("hostaddr") or "localhost"
        port = self.params.get("port") or "5432"
        return f"{host}:{port}/{self.params.get('dbname') or self.params.get('user') or ''}"

    def __repr__(self) -> str:
        return f"PostgresTarget({self.endpoint})"

    def key(self) -> ClientKey:
        return ClientKey("postgresql", self.endpoint, fingerprint(sorted(self.params.items())))

    def secrets(self) -> tuple[str, ...]:
        password = self.params.get("password")
        return (password,) if password else ()

    async def connect(self) -> SqlConnection:
        conninfo = make_conninfo(
            "",
            **self.params,
            connect_timeout=max(2, math.ceil(self.timeout)),  # libpq: whole seconds, at least 2
            application_name=self.params.get("application_name") or "tidal",
        )
        try:
            conn = await psycopg.AsyncConnection.connect(
                conninfo, autocommit=True, prepare_threshold=None
            )
        except psycopg.Error as exc:
            what = "authentication failed" if _auth_problem(exc) else "connection failed"
            raise ScalerError(self._message(what, exc)) from exc
        except OSError as exc:
            raise ScalerError(self._message("connection failed", exc)) from exc
        return _PsycopgConnection(conn, self)

    def _message(self, what: str, exc: BaseException) -> str:
        detail = redact(f"{type(exc).__name__}: {exc}".strip(), self.secrets())
        return f"postgresql {self.endpoint}: {what}: {detail}"


def _auth_problem(exc: psycopg.Error) -> bool:
    text = str(exc)
    return "authentication failed" in text or "no password supplied" in text


class _PsycopgConnection:
    def __init__(self, conn: psycopg.AsyncConnection[Any], target: PostgresTarget) -> None:
        self._conn = conn
        self._target = target

    async def rows(self, sql: str) -> Rows:
        try:
            cursor = await self._conn.execute(sql.encode())
            if cursor.description is None:
                raise QueryError(
                    f"postgresql {self._target.endpoint}: the query returned no result set"
                )
            return await cursor.fetchmany(2)
        except psycopg.OperationalError as exc:  # connection lost, server shut down, cancelled
            raise ScalerError(self._target._message("query failed", exc)) from exc
        except psycopg.Error as exc:  # the server answered with an SQL error
            raise QueryError(self._target._message("could not query postgreSQL", exc)) from exc
        except OSError as exc:
            raise ScalerError(self._target._message("connection failed", exc)) from exc

    async def close(self) -> None:
        await self._conn.close()


class PostgreSQLScaler(SqlScaler):
    PARAMS: ClassVar[tuple[Param, ...]] = (
        Param("query", sources=("metadata",), required=True),
        Param("targetQueryValue", "float", sources=("metadata",), doc="HPA target"),
        Param("activationTargetQueryValue", "float", sources=("metadata",), default=0.0),
        Param("connection", sources=("auth", "env"), secret=True, doc="libpq connection string"),
        Param("host", sources=_FIELD_SOURCES),
        Param("port", sources=_FIELD_SOURCES),
        Param("userName", sources=_FIELD_SOURCES),
        Param("dbName", sources=_FIELD_SOURCES),
        Param("sslmode", sources=_FIELD_SOURCES, allowed=SSL_MODES),
        Param("password", sources=("auth", "env"), secret=True),
    )
    SAMPLED = True

    @staticmethod
    def validate(config: Config, trigger: TriggerContext) -> Iterable[str]:
        problems: list[str] = []
        target = config.opt_float("targetQueryValue")
        if not target:
            problems.append("no targetQueryValue given")  # KEDA's check: absent or 0
        elif target < 0:  # the HPA refuses it; KEDA would fail creating the HPA
            problems.append("error parsing 'targetQueryValue': must be greater than 0")
        if config.opt_str("connection") is None:
            for name in ("host", "port", "userName", "dbName", "sslmode"):
                if config.opt_str(name) is None:
                    problems.append(f"no {name} given")
            port = config.opt_str("port")
            if port is not None and not port.isdigit():
                problems.append(f"error parsing 'port': invalid value '{port}' (expected a number)")
        if not problems:
            try:
                _conninfo(config)
            except ValueError as exc:
                problems.append(str(exc))
        return problems

    def __init__(self, config: Config, trigger: TriggerContext, clients: ClientPool) -> None:
        target = PostgresTarget(_conninfo(config), trigger.timeout)
        spec = MetricSpec(
            metric_name(trigger.index, "postgresql"),
            config.get_float("targetQueryValue"),
            trigger.metric_type,
        )
        super().__init__(
            target,
            config.get_str("query"),
            spec,
            config.get_float("activationTargetQueryValue"),
            clients,
        )
