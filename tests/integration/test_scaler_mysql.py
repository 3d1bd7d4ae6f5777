"""The mysql scaler against a real MySQL-protocol server (Debian's MariaDB, started by localenv).

Queries are counted on the server (the general log table), so "one query per round" is what
the server saw. The Go DSN parser is checked without a server.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from localenv.faultproxy import FaultProxy
from localenv.mysql import MysqlServer
from localenv.process import free_port
from localenv.pytest_sql import SqlDatabase
from scaler.clients import ClientPool
from scaler.errors import ConfigError, ScalerError
from scaler.registry import prepare
from scalers.sql.hub import SqlScaler
from scalers.sql.mysql import Dsn, parse_dsn
from tests.integration.sql_helpers import (
    assert_connection_error,
    assert_frozen_server_fails_then_recovers,
    assert_hung_server_stalls_no_other,
    assert_one_query_per_round,
    assert_query_error,
    assert_restart_survived,
    assert_slow_query_times_out,
    documents,
    manifest_auth,
    of_kind,
    sample_all,
    sql_scaler,
    tls_database,
    trigger,
    until_zero,
)

COUNT = "SELECT COUNT(*) FROM jobs WHERE state = 'queued'"


def _dsn(db: SqlDatabase, port: int | None = None, params: str = "") -> str:
    return f"{db.user}:{db.password}@tcp({db.host}:{port or db.port})/{db.name}{params}"


def _fields(db: SqlDatabase, **meta: str) -> dict[str, str]:
    return {
        "host": db.host,
        "port": str(db.port),
        "username": db.user,
        "dbName": db.name,
        "queryValue": "5",
        **meta,
    }


@pytest.fixture
def jobs(mysql_server: MysqlServer, mysql_database: SqlDatabase) -> SqlDatabase:
    """`jobs` with 7 queued and 2 done rows; KEDA's docs' `task_instance` with 40 running."""
    mysql_server.execute(
        "CREATE TABLE jobs (id int AUTO_INCREMENT PRIMARY KEY, state varchar(20))",
        "INSERT INTO jobs (state) VALUES " + ", ".join(["('queued')"] * 7 + ["('done')"] * 2),
        "CREATE TABLE task_instance (id int, state varchar(20))",
        "INSERT INTO task_instance VALUES " + ", ".join(["(1, 'running')"] * 40),
        "CREATE TABLE oddities (t varchar(10), w varchar(10), n int, d decimal(6, 2))",
        "INSERT INTO oddities VALUES ('12', 'twelve', NULL, 2.50)",
        database=mysql_database.name,
    )
    return mysql_database


# -- the Go driver's DSN -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dsn", "parsed"),
    [
        pytest.param(
            "user:password@tcp(mysql:3306)/stats_db",
            Dsn("user", "password", "tcp", "mysql:3306", "stats_db"),
            id="kedas-docs",
        ),
        pytest.param(
            "root:ebin:su@12!@tcp(10.1.2.3)/order?parseTime=true&tls=skip-verify",
            Dsn("root", "ebin:su@12!", "tcp", "10.1.2.3:3306", "order", "skip-verify"),
            id="colon-and-at-in-password-default-port",
        ),
        pytest.param("/db", Dsn(database="db"), id="everything-defaulted"),
        pytest.param(
            "u@unix(/run/mysqld/mysqld.sock)/db?charset=utf8mb4,utf8",
            Dsn("u", "", "unix", "/run/mysqld/mysqld.sock", "db", charset="utf8mb4"),
            id="unix-socket-charset",
        ),
        pytest.param(
            "u:p@tcp([::1]:3307)/my%20db", Dsn("u", "p", "tcp", "[::1]:3307", "my db"), id="ipv6"
        ),
    ],
)
def test_go_driver_dsns_parse(dsn: str, parsed: Dsn) -> None:
    assert parse_dsn(dsn) == parsed


@pytest.mark.parametrize(
    ("dsn", "problem"),
    [
        pytest.param("u:p@tcp(h:3306)", "missing the slash", id="no-slash"),
        pytest.param("u:p@tcp(h:3306/db", "not terminated", id="unclosed-address"),
        pytest.param("u:p@udp(h:1)/db", "network 'udp' is not supported", id="udp"),
        pytest.param("u:p@tcp(h:3306)/db?tls=custom", "tls=custom is not supported", id="tls-name"),
        pytest.param("u:p@tcp(h:3306)/db?sql_mode=ANSI", "sql_mode", id="session-variable"),
    ],
)
def test_bad_dsns_are_config_errors_without_the_password(dsn: str, problem: str) -> None:
    meta = {"query": "SELECT 1", "queryValue": "1", "connectionStringFromEnv": "CONN"}
    with pytest.raises(ConfigError) as info:
        prepare(trigger("mysql", meta, env={"CONN": dsn}))
    assert problem in str(info.value)
    assert ":p@" not in str(info.value)


@pytest.mark.parametrize(
    ("dsn", "name"),
    [
        pytest.param("u:p@tcp(h:3306)/stats_db", "s2-mysql-stats_db", id="database"),
        pytest.param(
            "u:p@tcp(h:3306)/orders?parseTime=true",
            "s2-mysql-orders?parseTime=true",
            id="parameters-included-as-keda-does",
        ),
        pytest.param("u:p/w@tcp(h)/Orders.EU", "s2-mysql-Orders-EU", id="after-the-last-slash"),
    ],
)
def test_metric_name_takes_keda_s_db_name_from_the_connection_string(dsn: str, name: str) -> None:
    meta = {"query": "SELECT 1", "queryValue": "1", "connectionStringFromEnv": "CONN"}
    scaler = sql_scaler(ClientPool(), trigger("mysql", meta, env={"CONN": dsn}, index=2))
    assert scaler.metric_spec().name == name


# -- values, activation, connection forms ---------------------------------------------------------


@pytest.mark.parametrize(
    ("activation", "active"),
    [
        pytest.param("0", True, id="above-default-activation"),
        pytest.param("7", False, id="equal-is-not-active"),
        pytest.param("6.5", True, id="fractional-activation"),
    ],
)
async def test_value_and_activation(
    jobs: SqlDatabase, pool: ClientPool, activation: str, active: bool
) -> None:
    meta = _fields(jobs, query=COUNT, activationQueryValue=activation)
    scaler = sql_scaler(pool, trigger("mysql", meta, {"password": jobs.password}))
    sample = await scaler.sample(1.0)
    assert (sample.value, sample.active, sample.observed_at) == (7.0, active, 1.0)
    assert scaler.metric_spec().name == f"s0-mysql-{jobs.name}"
    assert scaler.metric_spec().target == 5.0
    await scaler.aclose()


@pytest.mark.parametrize(
    ("query", "value"),
    [
        pytest.param("SELECT t FROM oddities", 12.0, id="numeric-text"),
        pytest.param("SELECT d FROM oddities", 2.5, id="decimal"),
        pytest.param("SELECT CEIL(COUNT(*) / 6) FROM jobs", 2.0, id="computed-decimal"),
    ],
)
async def test_numbers_mysql_sends_as_text_or_decimal(
    jobs: SqlDatabase, pool: ClientPool, query: str, value: float
) -> None:
    scaler = sql_scaler(
        pool, trigger("mysql", _fields(jobs, query=query), {"password": jobs.password})
    )
    assert (await scaler.sample(0.0)).value == value
    await scaler.aclose()


CONNECTION_FORMS = [
    pytest.param(
        lambda db: ({"query": COUNT, "queryValue": "5"}, {"connectionString": _dsn(db)}, {}),
        id="dsn-from-trigger-auth",
    ),
    pytest.param(
        lambda db: (
            {"query": COUNT, "queryValue": "5", "connectionStringFromEnv": "SQL_CONN_STR"},
            {},
            {"SQL_CONN_STR": _dsn(db, params="?parseTime=true&charset=utf8mb4")},
        ),
        id="dsn-from-env-with-driver-params",
    ),
    pytest.param(
        lambda db: (_fields(db, query=COUNT), {"password": db.password}, {}),
        id="fields-password-from-trigger-auth",
    ),
    pytest.param(
        lambda db: (
            _fields(
                db, query=COUNT, passwordFromEnv="MYSQL_PASSWORD", usernameFromEnv="MYSQL_USER"
            ),
            {},
            {"MYSQL_PASSWORD": db.password, "MYSQL_USER": db.user},
        ),
        id="fields-user-and-password-from-env",
    ),
    pytest.param(
        lambda db: (
            {"query": COUNT, "queryValue": "5"},
            {
                "host": db.host,
                "port": str(db.port),
                "username": db.user,
                "password": db.password,
                "dbName": db.name,
            },
            {},
        ),
        id="every-field-from-trigger-auth",
    ),
]


@pytest.mark.parametrize("form", CONNECTION_FORMS)
async def test_connection_forms(
    jobs: SqlDatabase,
    pool: ClientPool,
    form: Callable[[SqlDatabase], tuple[dict[str, str], dict[str, str], dict[str, str]]],
) -> None:
    meta, auth, env = form(jobs)
    scaler = sql_scaler(pool, trigger("mysql", meta, auth, env))
    assert (await scaler.sample(0.0)).value == 7.0
    await scaler.aclose()


async def test_tls_true_against_a_server_without_tls_is_an_error(
    jobs: SqlDatabase, pool: ClientPool
) -> None:
    """tls=true never falls back to plain text (this server offers no TLS)."""
    ctx = trigger(
        "mysql",
        {"query": COUNT, "queryValue": "5"},
        {"connectionString": _dsn(jobs, params="?tls=true")},
    )
    scaler = sql_scaler(pool, ctx)
    with pytest.raises(ScalerError, match="does not offer TLS"):
        await scaler.sample(0.0)
    await scaler.aclose()


# -- KEDA's documented examples -------------------------------------------------------------------

# The examples of KEDA's mysql scaler page, as written there.
DOC_FIELDS = """
triggers:
- type: mysql
  metadata:
    host: "mysql"
    port: "3306"
    username: "root"
    dbName: "stats_db"
    passwordFromEnv: MYSQL_PASSWORD
    queryValue: "4.4"
    activationQueryValue: "5.4"
    query: "SELECT CEIL(COUNT(*) / 6) FROM task_instance WHERE state='running' OR state='queued'"
"""

DOC_TRIGGER_AUTH = """
apiVersion: v1
kind: Secret
metadata:
  name: mysql-secrets
  namespace: my-project
type: Opaque
data:
  mysql_conn_str: dXNlcjpwYXNzd29yZEB0Y3AobXlzcWw6MzMwNikvc3RhdHNfZGI= # base64 encoded value of mysql connectionString of format user:password@tcp(mysql:3306)/stats_db
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata:
  name: keda-trigger-auth-mysql-secret
  namespace: my-project
spec:
  secretTargetRef:
  - parameter: connectionString
    name: mysql-secrets
    key: mysql_conn_str
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: mysql-scaledobject
  namespace: my-project
spec:
  scaleTargetRef:
    name: worker
  triggers:
  - type: mysql
    metadata:
      queryValue: "4.4"
      activationQueryValue: "5.4"
      query: "SELECT CEIL(COUNT(*) / 6) FROM task_instance WHERE state='running' OR state='queued'"
    authenticationRef:
      name: keda-trigger-auth-mysql-secret
"""  # noqa: E501


async def test_documented_trigger_authentication_example(
    mysql_server: MysqlServer, jobs: SqlDatabase, pool: ClientPool
) -> None:
    """The docs' Secret + TriggerAuthentication + ScaledObject, resolved by the daemon's
    resolver: as written (host `mysql`, never dialled here: only built) it names its metric
    s0-mysql-stats_db; with the Secret pointing at the test server (database `stats_db`) the
    query gives ceil(40 / 6) = 7, above the documented activation 5.4."""
    docs = documents(DOC_TRIGGER_AUTH)
    (so,) = of_kind(docs, "ScaledObject")
    meta = so["spec"]["triggers"][0]["metadata"]
    auth = await manifest_auth(docs, "keda-trigger-auth-mysql-secret")
    assert auth == {"connectionString": "user:password@tcp(mysql:3306)/stats_db"}
    as_written = sql_scaler(pool, trigger("mysql", meta, auth))
    assert as_written.metric_spec().name == "s0-mysql-stats_db"
    assert as_written.metric_spec().target == 4.4
    assert as_written.target.endpoint == "mysql:3306/stats_db"
    await as_written.aclose()

    mysql_server.execute(
        "CREATE DATABASE IF NOT EXISTS stats_db",
        "CREATE TABLE IF NOT EXISTS stats_db.task_instance (id int, state varchar(20))",
        "DELETE FROM stats_db.task_instance",
        "INSERT INTO stats_db.task_instance SELECT * FROM " + f"`{jobs.name}`.task_instance",
        f"GRANT SELECT ON stats_db.* TO '{jobs.user}'@'127.0.0.1'",
    )
    (secret,) = of_kind(docs, "Secret")
    secret["data"] = {}
    secret["stringData"] = {
        "mysql_conn_str": f"{jobs.user}:{jobs.password}@tcp({jobs.host}:{jobs.port})/stats_db"
    }
    auth = await manifest_auth(docs, "keda-trigger-auth-mysql-secret")
    scaler = sql_scaler(pool, trigger("mysql", meta, auth))
    assert scaler.metric_spec().name == "s0-mysql-stats_db"
    sample = await scaler.sample(0.0)
    assert (sample.value, sample.active) == (7.0, True)
    await scaler.aclose()


async def test_documented_field_example(jobs: SqlDatabase, pool: ClientPool) -> None:
    """The fields example parses unchanged; with the test server's host, port, user and
    database its query gives 7."""
    (trig,) = documents(DOC_FIELDS)[0]["triggers"]
    meta = dict(trig["metadata"])
    prepared = prepare(trigger("mysql", meta, env={"MYSQL_PASSWORD": "pw"}))
    assert not prepared.config.unknown_keys
    meta.update(host=jobs.host, port=str(jobs.port), username=jobs.user, dbName=jobs.name)
    scaler = sql_scaler(pool, trigger("mysql", meta, env={"MYSQL_PASSWORD": jobs.password}))
    assert scaler.metric_spec().name == f"s0-mysql-{jobs.name}"
    assert (await scaler.sample(0.0)).value == 7.0
    await scaler.aclose()


@pytest.mark.parametrize(
    ("meta", "problem"),
    [
        pytest.param(
            {"query": "SELECT 1"}, "missing required parameter 'queryValue'", id="no-target"
        ),
        pytest.param({"queryValue": "1"}, "missing required parameter 'query'", id="no-query"),
        pytest.param(
            {"query": "SELECT 1", "queryValue": "0"},
            "error parsing 'queryValue': invalid value '0' (must be greater than 0)",
            id="zero-target",
        ),
        pytest.param(
            {"query": "SELECT 1", "queryValue": "1", "port": "1"}, "no host given", id="no-host"
        ),
        pytest.param(
            {"query": "SELECT 1", "queryValue": "1", "host": "h", "port": "x", "username": "u"},
            "error parsing 'port'",
            id="bad-port",
        ),
        pytest.param(
            {"query": "SELECT 1", "queryValue": "1", "activationQueryValue": "AA"},
            "error parsing 'activationQueryValue'",
            id="bad-activation",
        ),
    ],
)
def test_configuration_problems_are_config_errors(meta: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        prepare(trigger("mysql", meta))
    assert problem in str(info.value)


# -- errors are never a zero ----------------------------------------------------------------------


def _scaler(
    pool: ClientPool,
    db: SqlDatabase,
    query: str = COUNT,
    *,
    port: int | None = None,
    auth: dict[str, str] | None = None,
    timeout: float = 3.0,
) -> SqlScaler:
    """A scaler of `db`, with its user's password unless `auth` is given."""
    meta = _fields(db, query=query, port=str(port or db.port))
    auth = {"password": db.password} if auth is None else auth
    return sql_scaler(pool, trigger("mysql", meta, auth, timeout=timeout))


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        pytest.param("SELECT w FROM oddities", "'twelve', not a number", id="text"),
        pytest.param("SELECT n FROM oddities", "returned NULL", id="null"),
        pytest.param("SELECT id FROM jobs WHERE 1 = 0", "returned no rows", id="no-rows"),
        pytest.param("SELECT id FROM jobs", "more than one row", id="several-rows"),
        pytest.param("SELECT 1, 2", "returned 2 columns", id="two-columns"),
        pytest.param("SELEC 1", "error in your SQL syntax", id="syntax-error"),
        pytest.param("SELECT COUNT(*) FROM missing", "doesn't exist", id="missing-table"),
        pytest.param("SELECT COUNT(*) FROM mysql.user", "denied", id="no-privilege"),
        pytest.param("DO 1", "no result set", id="not-a-query"),
    ],
)
async def test_unusable_results_are_query_errors(
    jobs: SqlDatabase, pool: ClientPool, query: str, fragment: str
) -> None:
    await assert_query_error(_scaler(pool, jobs, query), fragment, _scaler(pool, jobs), 7.0)


@pytest.mark.parametrize(
    "password",
    [pytest.param("wrong-password-123", id="wrong"), pytest.param(None, id="missing")],
)
async def test_bad_password_is_a_clear_scaler_error_without_the_secret(
    jobs: SqlDatabase, pool: ClientPool, password: str | None
) -> None:
    scaler = _scaler(pool, jobs, auth={} if password is None else {"password": password})
    await assert_connection_error(
        scaler, "authentication failed", "wrong-password-123", jobs.password
    )


async def test_refused_connection_is_a_scaler_error(jobs: SqlDatabase, pool: ClientPool) -> None:
    await assert_connection_error(_scaler(pool, jobs, port=free_port()), "connection failed")


async def test_slow_query_times_out_then_the_next_poll_works(
    jobs: SqlDatabase, pool: ClientPool
) -> None:
    slow = _scaler(pool, jobs, "SELECT COUNT(*) + SLEEP(30) FROM jobs", timeout=1.0)
    await assert_slow_query_times_out(slow, _scaler(pool, jobs, timeout=1.0), 7.0)


async def test_a_timed_out_query_does_not_keep_running_on_the_server(
    mysql_server: MysqlServer, jobs: SqlDatabase, pool: ClientPool
) -> None:
    """An hour-long query whose sample gave up is stopped with KILL QUERY (MySQL would run it
    to its end, and every poll would add one more running copy)."""
    query = "SELECT COUNT(*) + BENCHMARK(100000000000, MD5('x')) FROM jobs"
    await assert_connection_error(_scaler(pool, jobs, query, timeout=1.0), "no answer within 1 s")

    def running() -> int:
        sql = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = %s"
        return int(mysql_server.value(sql, (query,)))

    await until_zero(running)


async def test_hung_server_fails_in_the_timeout_and_stalls_no_other_object(
    jobs: SqlDatabase, pool: ClientPool
) -> None:
    """Through a proxy that accepts and never answers (no greeting): a ScalerError after the
    timeout, while an object on the healthy server answers first."""
    with FaultProxy((jobs.host, jobs.port), name="proxy-mysql-hung") as proxy:
        proxy.blackhole()
        hung = _scaler(pool, jobs, port=proxy.port, timeout=1.0)
        await assert_hung_server_stalls_no_other(hung, _scaler(pool, jobs, timeout=1.0), 7.0)


def _private(factory: Callable[..., MysqlServer]) -> tuple[MysqlServer, SqlDatabase]:
    """A private server with database `app`, user `reader` (password `pw`), one queued job."""
    server = factory()
    server.create_database("app")
    server.create_user("reader", "pw", "app")
    server.execute(
        "CREATE TABLE jobs (id int, state varchar(9))",
        "INSERT INTO jobs VALUES (1, 'queued')",
        database="app",
    )
    return server, SqlDatabase(server.host, server.port, "app", "reader", "pw")


async def test_server_restart_is_survived_on_a_new_connection(
    mysql_factory: Callable[..., MysqlServer], pool: ClientPool
) -> None:
    server, db = _private(mysql_factory)
    await assert_restart_survived(_scaler(pool, db), server, 1.0)


async def test_a_server_that_stops_answering_fails_in_the_timeout_then_recovers(
    mysql_factory: Callable[..., MysqlServer], pool: ClientPool
) -> None:
    server, db = _private(mysql_factory)
    await assert_frozen_server_fails_then_recovers(_scaler(pool, db, timeout=1.0), server, 1.0)


# -- coalescing -----------------------------------------------------------------------------------

OBJECTS = 10
ROUNDS = 3


async def test_objects_reading_one_query_share_one_query_per_round(
    mysql_server: MysqlServer, jobs: SqlDatabase, pool: ClientPool
) -> None:
    """10 objects, one query, one target: 3 rounds are 3 queries on the server, not 30."""
    query = f"SELECT COUNT(*) FROM jobs /* {jobs.name} */"
    scalers = [_scaler(pool, jobs, query) for _ in range(OBJECTS)]
    await assert_one_query_per_round(scalers, pool, lambda: mysql_server.calls(query), 9.0, ROUNDS)


async def test_different_queries_are_not_coalesced(
    mysql_server: MysqlServer, jobs: SqlDatabase, pool: ClientPool
) -> None:
    first = f"SELECT COUNT(*) FROM jobs /* {jobs.name} a */"
    second = f"SELECT MAX(id) FROM jobs /* {jobs.name} b */"
    auth = {"password": jobs.password}
    a = sql_scaler(pool, trigger("mysql", _fields(jobs, query=first), auth))
    b = sql_scaler(pool, trigger("mysql", _fields(jobs, query=second), auth))
    assert [s.value for s in await sample_all([a, b, a])] == [9.0, 9.0, 9.0]
    assert (mysql_server.calls(first), mysql_server.calls(second)) == (1, 1)
    assert (await a.hub()).connects == 2
    await a.aclose()
    await b.aclose()


# -- TLS ------------------------------------------------------------------------------------------

ENCRYPTED = (
    "SELECT IF(VARIABLE_VALUE <> '', 1, 0) FROM information_schema.SESSION_STATUS"
    " WHERE VARIABLE_NAME = 'SSL_CIPHER'"
)


@pytest.fixture
def tls_db(mysql_factory: Callable[..., MysqlServer]) -> SqlDatabase:
    return tls_database(mysql_factory, "mysql.test")


@pytest.mark.parametrize(
    ("tls", "encrypted"),
    [
        pytest.param("skip-verify", 1.0, id="skip-verify"),
        pytest.param("preferred", 1.0, id="preferred"),
        pytest.param("false", 0.0, id="false"),
    ],
)
async def test_tls_parameter_decides_whether_the_connection_is_encrypted(
    tls_db: SqlDatabase, pool: ClientPool, tls: str, encrypted: float
) -> None:
    auth = {"connectionString": _dsn(tls_db, params=f"?tls={tls}")}
    scaler = sql_scaler(pool, trigger("mysql", {"query": ENCRYPTED, "queryValue": "1"}, auth))
    assert (await scaler.sample(0.0)).value == encrypted
    await scaler.aclose()


async def test_tls_true_against_an_untrusted_certificate_is_a_scaler_error(
    tls_db: SqlDatabase, pool: ClientPool
) -> None:
    auth = {"connectionString": _dsn(tls_db, params="?tls=true")}
    scaler = sql_scaler(pool, trigger("mysql", {"query": ENCRYPTED, "queryValue": "1"}, auth))
    await assert_connection_error(scaler, "CERTIFICATE_VERIFY_FAILED", "pw@")
