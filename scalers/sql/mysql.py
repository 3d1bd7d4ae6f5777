"""The `mysql` trigger: the number a MySQL (or MariaDB) query returns.

Parameters are KEDA's: ``query``, ``queryValue`` (required), ``activationQueryValue`` (default
0), ``metricName`` (accepted and ignored, as KEDA ignores it); the connection either as a Go
MySQL driver DSN, ``connectionString`` from a TriggerAuthentication or
``connectionStringFromEnv`` (``user:password@tcp(host:3306)/dbname?tls=true``), or as
``username`` (metadata, TriggerAuthentication or ``usernameFromEnv``), ``password``
(TriggerAuthentication or ``passwordFromEnv``; may be empty), ``host``, ``port`` and ``dbName``
(metadata or TriggerAuthentication). KEDA's metric name: ``s<N>-mysql-<dbName>``, where with a
connection string dbName is whatever follows its last ``/`` (parameters included), as KEDA
takes it.

The DSN grammar is the Go driver's, ``[user[:password]@][net[(address)]]/dbname[?params]``
with ``net`` ``tcp`` (default ``127.0.0.1:3306``, port 3306 when left out) or ``unix``.
Parameters: ``tls`` = ``true`` (verified), ``skip-verify`` or ``preferred`` (unverified),
``false``; ``charset`` (the first of a list); the Go driver's own client settings
(``parseTime``, ``loc``, ``timeout``, ``readTimeout``, ``interpolateParams``, ...) change nothing
for one numeric query and are accepted. Any other parameter is a session variable the Go
driver would SET on connect: refused with a ConfigError rather than silently ignored.

The query must return one row with one non-NULL number; a text value holding a number counts
(MySQL sends DECIMAL and computed values as text). Active when the value is strictly greater
than ``activationQueryValue``.

aiomysql speaks to the server: asyncio-native, maintained in aio-libs, on PyMySQL's protocol
code (the most used pure-Python MySQL client: no C build, MySQL's and MariaDB's auth plugins).
It is untyped: this module is its typed boundary. With ``tls=true`` a server that does not
offer TLS is an error (PyMySQL would fall back to plain text silently). A query whose sample
timed out is stopped on the server with ``KILL QUERY`` (from a new connection), as psycopg
cancels PostgreSQL's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote

import aiomysql  # type: ignore[import-untyped]
from pymysql import err as mysql_errors
from pymysql.constants import CLIENT

from scaler.clients import ClientKey, ClientPool, TlsSettings, fingerprint
from scaler.contract import MetricSpec, TriggerContext, metric_name
from scaler.errors import QueryError, ScalerError
from scaler.params import Config, Param, redact
from scalers.sql.hub import Rows, SqlConnection, SqlScaler

DEFAULT_PORT = 3306
# The Go driver's client-side parameters: nothing to do for one numeric query.
DRIVER_PARAMS = frozenset(
    {
        "allowAllFiles", "allowCleartextPasswords", "allowFallbackToPlaintext",
        "allowNativePasswords", "allowOldPasswords", "checkConnLiveness", "clientFoundRows",
        "collation", "columnsWithAlias", "compress", "connectionAttributes", "interpolateParams",
        "loc", "maxAllowedPacket", "multiStatements", "parseTime", "readTimeout",
        "rejectReadOnly", "serverPubKey", "timeTruncate", "timeout", "writeTimeout",
    }
)  # fmt: skip
TLS_VALUES = ("true", "false", "skip-verify", "preferred")
AUTH_ERRORS = frozenset({1044, 1045, 1698})  # access denied (db, user/password, plugin)


@dataclass(frozen=True, slots=True, repr=False)
class Dsn:
    """A parsed Go MySQL driver DSN; repr shows no password."""

    user: str = ""
    password: str = ""
    net: str = "tcp"
    address: str = f"127.0.0.1:{DEFAULT_PORT}"
    database: str = ""
    tls: str = "false"
    charset: str = ""

    def __repr__(self) -> str:
        return f"Dsn({self.user}@{self.net}({self.address})/{self.database})"


def parse_dsn(dsn: str) -> Dsn:
    """The Go driver's grammar; ValueError (never showing the password) when it does not fit."""
    slash = dsn.rfind("/")
    if slash < 0:
        raise ValueError("invalid DSN: missing the slash separating the database name")
    head, tail = dsn[:slash], dsn[slash + 1 :]
    user = password = ""
    at = head.rfind("@")
    if at >= 0:
        user, _, password = head[:at].partition(":")
        head = head[at + 1 :]
    net, address = "tcp", ""
    if head:
        paren = head.find("(")
        if paren >= 0:
            if not head.endswith(")"):
                raise ValueError(
                    "invalid DSN: network address not terminated (missing closing brace)"
                )
            net, address = head[:paren], head[paren + 1 : -1]
        else:
            net = head
    if net not in ("tcp", "unix"):
        raise ValueError(f"invalid DSN: network '{net}' is not supported (tcp or unix)")
    if net == "tcp":
        address = address or f"127.0.0.1:{DEFAULT_PORT}"
        host, sep, port = address.rpartition(":")
        if not sep or "]" in port:
            address = f"{address}:{DEFAULT_PORT}"
        elif not port.isdigit() or not host:
            raise ValueError(f"invalid DSN: bad address '{address}'")
    elif not address:
        address = "/tmp/mysql.sock"
    database, _, query = tail.partition("?")
    tls, charset = "false", ""
    unknown: list[str] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "tls":
            if value.lower() not in TLS_VALUES:
                raise ValueError(
                    f"invalid DSN: tls={value} is not supported (one of {', '.join(TLS_VALUES)})"
                )
            tls = value.lower()
        elif key == "charset":
            charset = value.split(",")[0]
        elif key not in DRIVER_PARAMS:
            unknown.append(key)
    if unknown:
        raise ValueError(
            "invalid DSN: parameters "
            + ", ".join(sorted(unknown))
            + " would be session variables (SET on connect), which Tidal does not set"
        )
    return Dsn(user, password, net, address, unquote(database), tls, charset)


def _dsn_of(config: Config) -> Dsn:
    connection = config.opt_str("connectionString")
    if connection is not None:
        return parse_dsn(connection)
    return Dsn(
        user=config.opt_str("username") or "",
        password=config.opt_str("password") or "",
        address=f"{config.get_str('host')}:{config.get_str('port')}",
        database=config.opt_str("dbName") or "",
    )


def metric_db_name(config: Config) -> str:
    """KEDA's dbName for the metric name: the field, or what follows the connection string's
    last '/' (its parameters included)."""
    connection = config.opt_str("connectionString")
    if connection is not None:
        return connection.split("/")[-1]
    return config.opt_str("dbName") or ""


@dataclass(frozen=True, slots=True, repr=False)
class MysqlTarget:
    """One server, database and credential; repr shows no secret."""

    dsn: Dsn
    timeout: float
    kind: str = field(default="mysql", init=False)

    @property
    def endpoint(self) -> str:
        where = self.dsn.address if self.dsn.net == "tcp" else f"unix:{self.dsn.address}"
        return f"{where}/{self.dsn.database}"

    def __repr__(self) -> str:
        return f"MysqlTarget({self.endpoint}, tls={self.dsn.tls})"

    def key(self) -> ClientKey:
        d = self.dsn
        return ClientKey("mysql", self.endpoint, fingerprint(d.user, d.password, d.tls, d.charset))

    def secrets(self) -> tuple[str, ...]:
        return (self.dsn.password,) if self.dsn.password else ()

    async def connect(self) -> SqlConnection:
        return _AiomysqlConnection(await self._open(), self)

    async def kill_query(self, thread_id: int) -> None:
        """``KILL QUERY`` on a new connection: a query whose sample gave up stops running on
        the server (it would otherwise run to its end, and a query slower than the timeout
        would pile up one more copy on every poll). Best effort, bounded by the timeout."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.timeout):
                conn = await self._open()
                try:
                    async with conn.cursor() as cursor:
                        await cursor.execute(f"KILL QUERY {int(thread_id)}")
                finally:
                    conn.close()

    async def _open(self) -> Any:
        d = self.dsn
        kwargs: dict[str, Any] = {
            "user": d.user,
            "password": d.password,
            "db": d.database or None,
            "connect_timeout": self.timeout,
            "autocommit": True,
            "local_infile": False,
            "charset": d.charset,
            "program_name": "tidal",
        }
        if d.net == "unix":
            kwargs["unix_socket"] = d.address
        else:
            host, _, port = d.address.rpartition(":")
            kwargs["host"], kwargs["port"] = host.strip("[]"), int(port)
        if d.tls != "false":
            kwargs["ssl"] = await _tls_context(d.tls)
        try:
            conn = await aiomysql.connect(**kwargs)
        except mysql_errors.OperationalError as exc:
            what = "authentication failed" if _code(exc) in AUTH_ERRORS else "connection failed"
            raise ScalerError(self.message(what, exc)) from exc
        except (mysql_errors.MySQLError, OSError) as exc:
            raise ScalerError(self.message("connection failed", exc)) from exc
        if d.tls == "true" and not conn.server_capabilities & CLIENT.SSL:
            conn.close()
            raise ScalerError(
                f"mysql {self.endpoint}: the server does not offer TLS and the DSN says tls=true"
            )
        return conn

    def message(self, what: str, exc: BaseException) -> str:
        """`what` with the error, and the TLS error under it (aiomysql reports a failed
        certificate check as "Can't connect", the reason only in the exception's cause)."""
        detail = f"{type(exc).__name__}: {exc}"
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ssl.SSLError):
            detail += f" ({type(cause).__name__}: {cause})"
        return f"mysql {self.endpoint}: {what}: {redact(detail, self.secrets())}"


async def _tls_context(mode: str) -> ssl.SSLContext:
    """The shared context: the system CAs, verified for tls=true, unverified otherwise."""
    return await TlsSettings(verify=mode == "true").context()


def _code(exc: mysql_errors.MySQLError) -> int | None:
    code = exc.args[0] if exc.args else None
    return code if isinstance(code, int) else None


_KILLS: set[asyncio.Task[None]] = set()  # KILL QUERY tasks in flight (referenced until done)


class _AiomysqlConnection:
    def __init__(self, conn: Any, target: MysqlTarget) -> None:
        self._conn = conn
        self._target = target

    def _kill_later(self) -> None:
        task = asyncio.ensure_future(self._target.kill_query(self._conn.thread_id()))
        _KILLS.add(task)
        task.add_done_callback(_KILLS.discard)

    async def rows(self, sql: str) -> Rows:
        try:
            async with self._conn.cursor() as cursor:
                await cursor.execute(sql)
                if cursor.description is None:
                    raise QueryError(
                        f"mysql {self._target.endpoint}: the query returned no result set"
                    )
                rows: Rows = await cursor.fetchmany(2)
                return rows
        except mysql_errors.OperationalError as exc:
            code = _code(exc)
            if code is not None and code < 2000:  # the server refused the query (e.g. 1142)
                raise QueryError(self._target.message("could not query MySQL", exc)) from exc
            raise ScalerError(self._target.message("query failed", exc)) from exc
        except mysql_errors.MySQLError as exc:  # syntax, unknown table, data errors
            raise QueryError(self._target.message("could not query MySQL", exc)) from exc
        except OSError as exc:
            raise ScalerError(self._target.message("connection failed", exc)) from exc
        except asyncio.CancelledError:  # the sample gave up (timeout) or the hub closed
            self._kill_later()
            raise

    async def close(self) -> None:
        self._conn.close()


class MySQLScaler(SqlScaler):
    PARAMS: ClassVar[tuple[Param, ...]] = (
        Param("query", sources=("metadata",), required=True),
        # KEDA does not check it; the HPA refuses a target <= 0, so say so when parsing.
        Param("queryValue", "float", sources=("metadata",), required=True, above=0),
        Param("activationQueryValue", "float", sources=("metadata",), default=0.0),
        Param("connectionString", sources=("auth", "env"), secret=True, doc="Go driver DSN"),
        Param("username", sources=("metadata", "auth", "env")),
        Param("password", sources=("auth", "env"), secret=True),
        Param("host", sources=("metadata", "auth", "env"), doc="hostFromEnv as KEDA's docs say"),
        Param("port", sources=("metadata", "auth", "env")),
        Param("dbName", sources=("metadata", "auth")),
        Param("metricName", sources=("metadata",), doc="ignored, as KEDA ignores it"),
    )
    SAMPLED = True
    NUMERIC_TEXT = True

    @staticmethod
    def validate(config: Config, trigger: TriggerContext) -> Iterable[str]:
        problems: list[str] = []
        connection = config.opt_str("connectionString")
        if connection is not None:
            try:
                parse_dsn(connection)
            except ValueError as exc:
                problems.append(redact(str(exc), config.secret_values()))
            return problems
        for name in ("host", "port", "username"):
            if config.opt_str(name) is None:
                problems.append(f"no {name} given")
        port = config.opt_str("port")
        if port is not None and not port.isdigit():
            problems.append(f"error parsing 'port': invalid value '{port}' (expected a number)")
        return problems

    def __init__(self, config: Config, trigger: TriggerContext, clients: ClientPool) -> None:
        target = MysqlTarget(_dsn_of(config), trigger.timeout)
        spec = MetricSpec(
            metric_name(trigger.index, f"mysql-{metric_db_name(config)}"),
            config.get_float("queryValue"),
            trigger.metric_type,
        )
        super().__init__(
            target,
            config.get_str("query"),
            spec,
            config.get_float("activationQueryValue"),
            clients,
        )
