"""The postgresql scaler against a real PostgreSQL (Debian's, started by localenv).

Queries are counted on the server (pg_stat_statements), so "one query per round" is what the
server saw, not what the client believes it sent.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import pytest

from localenv.faultproxy import FaultProxy
from localenv.postgres import PostgresServer
from localenv.process import free_port
from localenv.pytest_sql import SqlDatabase
from scaler.clients import ClientPool
from scaler.errors import ConfigError
from scaler.registry import prepare
from scalers.sql.hub import SqlHub, SqlScaler
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

COUNT = "SELECT count(*) FROM jobs WHERE state = 'queued'"


def _url(db: SqlDatabase, host: str | None = None, port: int | None = None) -> str:
    return (
        f"postgresql://{db.user}:{quote(db.password, safe='')}@{host or db.host}:"
        f"{port or db.port}/{db.name}?sslmode=disable"
    )


def _fields(db: SqlDatabase, **meta: str) -> dict[str, str]:
    return {
        "host": db.host,
        "port": str(db.port),
        "userName": db.user,
        "dbName": db.name,
        "sslmode": "disable",
        "targetQueryValue": "5",
        **meta,
    }


@pytest.fixture
def jobs(postgres_server: PostgresServer, postgres_database: SqlDatabase) -> SqlDatabase:
    """`jobs` with 7 queued and 2 done rows; KEDA's docs' `task_instance` with 40 running."""
    postgres_server.execute(
        "CREATE TABLE jobs (id serial, state text)",
        "INSERT INTO jobs (state) SELECT 'queued' FROM generate_series(1, 7)",
        "INSERT INTO jobs (state) VALUES ('done'), ('done')",
        "CREATE TABLE task_instance (id serial, state text)",
        "INSERT INTO task_instance (state) SELECT 'running' FROM generate_series(1, 40)",
        "CREATE TABLE oddities (t text, b boolean, n numeric, f float8)",
        "INSERT INTO oddities VALUES ('12', true, NULL, 'NaN')",
        f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{postgres_database.user}"',
        dbname=postgres_database.name,
    )
    return postgres_database


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
    meta = _fields(jobs, query=COUNT, activationTargetQueryValue=activation)
    scaler = sql_scaler(pool, trigger("postgresql", meta, {"password": jobs.password}))
    sample = await scaler.sample(1.0)
    assert (sample.value, sample.active, sample.observed_at) == (7.0, active, 1.0)
    assert scaler.metric_spec().name == "s0-postgresql"
    assert scaler.metric_spec().target == 5.0
    await scaler.aclose()


def _keyword_form(db: SqlDatabase) -> str:
    password = db.password.replace("'", "\\'")
    return (
        f"host={db.host} port={db.port} user={db.user} dbname={db.name}"
        f" password='{password}' sslmode=disable"
    )


CONNECTION_FORMS = [
    pytest.param(
        lambda db: ({"query": COUNT, "targetQueryValue": "5"}, {"connection": _url(db)}, {}),
        id="url-from-trigger-auth",
    ),
    pytest.param(
        lambda db: (
            {"query": COUNT, "targetQueryValue": "5", "connectionFromEnv": "PG_CONN"},
            {},
            {"PG_CONN": _keyword_form(db)},
        ),
        id="keyword-form-from-env",
    ),
    pytest.param(
        lambda db: (_fields(db, query=COUNT), {"password": db.password}, {}),
        id="fields-password-from-trigger-auth",
    ),
    pytest.param(
        lambda db: (
            _fields(db, query=COUNT, passwordFromEnv="PG_PASSWORD"),
            {},
            {"PG_PASSWORD": db.password},
        ),
        id="fields-password-from-env",
    ),
    pytest.param(
        lambda db: (
            {"query": COUNT, "targetQueryValue": "5", "sslmode": "disable"},
            {
                "host": db.host,
                "port": str(db.port),
                "userName": db.user,
                "dbName": db.name,
                "password": db.password,
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
    scaler = sql_scaler(pool, trigger("postgresql", meta, auth, env))
    assert (await scaler.sample(0.0)).value == 7.0
    await scaler.aclose()


# -- KEDA's documented examples -------------------------------------------------------------------

# The three examples of KEDA's postgresql scaler page, as written there.
DOC_CONNECTION_FROM_ENV = """
triggers:
- type: postgresql
  metadata:
    connectionFromEnv: AIRFLOW_CONN_AIRFLOW_DB
    query: "SELECT ceil(COUNT(*)::decimal / 16) FROM task_instance WHERE state='running' OR state='queued';"
    targetQueryValue: "1.1"
    activationTargetQueryValue: "5"
"""  # noqa: E501

DOC_FIELDS = """
triggers:
- type: postgresql
  metadata:
    userName: "kedaUser"
    passwordFromEnv: PG_PASSWORD
    host: postgres-svc.namespace.cluster.local #use the cluster-wide namespace as KEDA
                                               #lives in a different namespace from your postgres
    port: "5432"
    dbName: test_db_name
    sslmode: disable
    query: "SELECT ceil(COUNT(*)::decimal / 16) FROM task_instance WHERE state='running' OR state='queued';"
    targetQueryValue: "2.2"
    activationTargetQueryValue: "3.3"
"""  # noqa: E501

DOC_TRIGGER_AUTH = """
apiVersion: v1
kind: Secret
metadata:
  name: postgresql-secrets
  namespace: my-project
type: Opaque
data:
  postgresql_conn_str: cG9zdGdyZXNxbDovL3Bvc3RncmVzOnBhc3N3b3JkQDEwLjAuMC42NTo1NDMyL2RhdGFiYXNlP3NzbG1vZGU9ZGlzYWJsZQ==
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata:
  name: keda-trigger-auth-postgresql-secret
  namespace: my-project
spec:
  secretTargetRef:
  - parameter: connection
    name: postgresql-secrets
    key: postgresql_conn_str
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: postgresql-scaledobject
  namespace: my-project
spec:
  scaleTargetRef:
    name: worker
  triggers:
  - type: postgresql
    metadata:
      query: "SELECT ceil(COUNT(*)::decimal / 16) FROM task_instance WHERE state='running' OR state='queued'"
      targetQueryValue: "1"
    authenticationRef:
      name: keda-trigger-auth-postgresql-secret
"""  # noqa: E501


def _doc_trigger(text: str) -> dict[str, object]:
    docs = documents(text)
    if docs and "triggers" in docs[0]:
        first: dict[str, object] = docs[0]["triggers"][0]
        return first
    (so,) = of_kind(docs, "ScaledObject")
    trig: dict[str, object] = so["spec"]["triggers"][0]
    return trig


@pytest.mark.parametrize(
    ("text", "env", "target", "activation"),
    [
        pytest.param(
            DOC_CONNECTION_FROM_ENV,
            {"AIRFLOW_CONN_AIRFLOW_DB": "postgresql://test@localhost"},
            1.1,
            5.0,
            id="connection-from-env",
        ),
        pytest.param(DOC_FIELDS, {"PG_PASSWORD": "pw"}, 2.2, 3.3, id="fields"),
    ],
)
async def test_documented_triggers_parse_unchanged(
    text: str, env: dict[str, str], target: float, activation: float
) -> None:
    trig = _doc_trigger(text)
    meta = trig["metadata"]
    assert isinstance(meta, dict)
    prepared = prepare(trigger("postgresql", meta, env=env))
    assert not prepared.config.unknown_keys
    assert prepared.config.get_float("targetQueryValue") == target
    assert prepared.config.get_float("activationTargetQueryValue") == activation


async def test_documented_trigger_authentication_example(
    jobs: SqlDatabase, pool: ClientPool
) -> None:
    """The docs' Secret + TriggerAuthentication + ScaledObject, resolved by the daemon's
    resolver; as written its Secret points at 10.0.0.65 (never dialled here: only built), then
    with the Secret's value pointing at the test server the query runs and gives KEDA's
    number: ceil(40 / 16) = 3."""
    docs = documents(DOC_TRIGGER_AUTH)
    trig = _doc_trigger(DOC_TRIGGER_AUTH)
    meta = trig["metadata"]
    assert isinstance(meta, dict)
    auth = await manifest_auth(docs, "keda-trigger-auth-postgresql-secret")
    assert auth == {
        "connection": "postgresql://postgres:password@10.0.0.65:5432/database?sslmode=disable"
    }
    as_written = sql_scaler(pool, trigger("postgresql", meta, auth))
    assert as_written.metric_spec().name == "s0-postgresql"
    assert as_written.target.endpoint == "10.0.0.65:5432/database"
    await as_written.aclose()

    (secret,) = of_kind(docs, "Secret")
    secret["data"] = {}
    secret["stringData"] = {"postgresql_conn_str": _url(jobs)}
    auth = await manifest_auth(docs, "keda-trigger-auth-postgresql-secret")
    scaler = sql_scaler(pool, trigger("postgresql", meta, auth))
    sample = await scaler.sample(0.0)
    assert (sample.value, sample.active) == (3.0, True)
    await scaler.aclose()


async def test_documented_field_example_runs(jobs: SqlDatabase, pool: ClientPool) -> None:
    """The fields example with the test server's host, port, user and database: its query
    (trailing ';' included) gives 3, below the documented activation 3.3: not active."""
    meta = dict(_doc_trigger(DOC_FIELDS)["metadata"])  # type: ignore[call-overload]
    meta.update(host=jobs.host, port=str(jobs.port), userName=jobs.user, dbName=jobs.name)
    scaler = sql_scaler(pool, trigger("postgresql", meta, env={"PG_PASSWORD": jobs.password}))
    sample = await scaler.sample(0.0)
    assert (sample.value, sample.active) == (3.0, False)
    await scaler.aclose()


@pytest.mark.parametrize(
    ("meta", "problem"),
    [
        pytest.param({"query": "SELECT 1"}, "no targetQueryValue given", id="no-target"),
        pytest.param(
            {"query": "SELECT 1", "targetQueryValue": "0", "connectionFromEnv": "X"},
            "no targetQueryValue given",
            id="zero-target",
        ),
        pytest.param(
            {"query": "SELECT 1", "targetQueryValue": "-2", "connectionFromEnv": "X"},
            "must be greater than 0",
            id="negative-target",
        ),
        pytest.param(
            {"query": "SELECT 1", "targetQueryValue": "1", "host": "h"},
            "no port given",
            id="fields-without-port",
        ),
        pytest.param(
            {"query": "SELECT 1", "targetQueryValue": "1", "connectionFromEnv": "X"},
            "connection string does not parse",
            id="bad-connection-string",
        ),
        pytest.param(
            {
                **dict.fromkeys(("host", "userName", "dbName"), "x"),
                **{"port": "1", "query": "SELECT 1", "targetQueryValue": "1", "sslmode": "maybe"},
            },
            "error parsing 'sslmode'",
            id="unknown-sslmode",
        ),
    ],
)
def test_configuration_problems_are_config_errors(meta: dict[str, str], problem: str) -> None:
    env = {"X": "host=a password=hunter2 oops"}
    with pytest.raises(ConfigError) as info:
        prepare(trigger("postgresql", meta, env=env))
    assert problem in str(info.value)
    assert "hunter2" not in str(info.value)


# -- errors are never a zero ----------------------------------------------------------------------


def _scaler(
    pool: ClientPool,
    db: SqlDatabase,
    query: str = COUNT,
    *,
    port: int | None = None,
    auth: dict[str, str] | None = None,
    timeout: float = 3.0,
    index: int = 0,
) -> SqlScaler:
    """A scaler of `db`, with its user's password unless `auth` is given."""
    meta = _fields(db, query=query, port=str(port or db.port))
    auth = {"password": db.password} if auth is None else auth
    return sql_scaler(pool, trigger("postgresql", meta, auth, timeout=timeout, index=index))


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        pytest.param("SELECT t FROM oddities", "returned a str value, not a number", id="text"),
        pytest.param("SELECT b FROM oddities", "returned a boolean", id="boolean"),
        pytest.param("SELECT n FROM oddities", "returned NULL", id="null"),
        pytest.param("SELECT f FROM oddities", "not a finite number", id="nan"),
        pytest.param("SELECT id FROM jobs WHERE false", "returned no rows", id="no-rows"),
        pytest.param("SELECT id FROM jobs", "more than one row", id="several-rows"),
        pytest.param("SELECT 1, 2", "returned 2 columns", id="two-columns"),
        pytest.param("SELEC 1", "syntax error", id="syntax-error"),
        pytest.param("SELECT count(*) FROM missing", "does not exist", id="missing-table"),
        pytest.param("SELECT 1 / 0", "division by zero", id="division-by-zero"),
        pytest.param("SET search_path = public", "no result set", id="not-a-query"),
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
    """The server also cancels the query (psycopg sends PostgreSQL's cancel request)."""
    slow = _scaler(pool, jobs, "SELECT count(*) FROM jobs, pg_sleep(30)", timeout=1.0)
    await assert_slow_query_times_out(slow, _scaler(pool, jobs, timeout=1.0), 7.0)


async def test_a_timed_out_query_does_not_keep_running_on_the_server(
    postgres_server: PostgresServer, jobs: SqlDatabase, pool: ClientPool
) -> None:
    """An hour-long query whose sample gave up is cancelled on the server (else every poll
    would add one more running copy)."""
    query = "SELECT count(*) FROM jobs, pg_sleep(3600)"
    await assert_connection_error(_scaler(pool, jobs, query, timeout=1.0), "no answer within 1 s")

    def running() -> int:
        sql = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = %s"
        return int(postgres_server.value(sql, (query,)))

    await until_zero(running)


async def test_hung_server_fails_in_the_timeout_and_stalls_no_other_object(
    jobs: SqlDatabase, pool: ClientPool
) -> None:
    """Through a proxy that accepts and never answers: a ScalerError (no zero) after the
    timeout, while an object on the healthy server answers first."""
    with FaultProxy((jobs.host, jobs.port), name="proxy-postgres-hung") as proxy:
        proxy.blackhole()
        hung = _scaler(pool, jobs, port=proxy.port, timeout=1.0)
        await assert_hung_server_stalls_no_other(hung, _scaler(pool, jobs, timeout=1.0), 7.0)


def _private(factory: Callable[..., PostgresServer]) -> tuple[PostgresServer, SqlDatabase]:
    """A private server with database `app`, user `reader` (password `pw`), one queued job."""
    server = factory()
    server.create_database("app")
    server.create_user("reader", "pw", "app")
    server.execute(
        "CREATE TABLE jobs (id int, state text)",
        "INSERT INTO jobs VALUES (1, 'queued')",
        'GRANT SELECT ON jobs TO "reader"',
        dbname="app",
    )
    return server, SqlDatabase(server.host, server.port, "app", "reader", "pw")


async def test_server_restart_is_survived_on_a_new_connection(
    postgres_factory: Callable[..., PostgresServer], pool: ClientPool
) -> None:
    server, db = _private(postgres_factory)
    await assert_restart_survived(_scaler(pool, db), server, 1.0)


async def test_a_server_that_stops_answering_fails_in_the_timeout_then_recovers(
    postgres_factory: Callable[..., PostgresServer], pool: ClientPool
) -> None:
    server, db = _private(postgres_factory)
    await assert_frozen_server_fails_then_recovers(_scaler(pool, db, timeout=1.0), server, 1.0)


# -- coalescing -----------------------------------------------------------------------------------

OBJECTS = 10
ROUNDS = 3
# pg_stat_statements shows constants as $n: the counted queries have none.
ALL_JOBS = "SELECT count(*) FROM jobs"


async def test_objects_reading_one_query_share_one_query_per_round(
    postgres_server: PostgresServer, jobs: SqlDatabase, pool: ClientPool
) -> None:
    """10 objects (two trigger indexes), one query, one target: 3 rounds are 3 calls on the
    server, not 30."""
    scalers = [_scaler(pool, jobs, ALL_JOBS, index=i % 2) for i in range(OBJECTS)]
    postgres_server.reset_calls(jobs.name)
    calls = lambda: postgres_server.calls(ALL_JOBS, jobs.name)  # noqa: E731
    await assert_one_query_per_round(scalers, pool, calls, 9.0, ROUNDS)


async def test_different_queries_or_credentials_are_not_coalesced(
    postgres_server: PostgresServer, jobs: SqlDatabase, pool: ClientPool
) -> None:
    """Two query texts on one target: one call each per round, run side by side on two
    connections of the same hub. The same query with another credential: another hub."""
    other = "SELECT max(id) FROM jobs"
    auth = {"password": jobs.password}
    a = sql_scaler(pool, trigger("postgresql", _fields(jobs, query=ALL_JOBS), auth))
    b = sql_scaler(pool, trigger("postgresql", _fields(jobs, query=other), auth))
    superuser = sql_scaler(
        pool,
        trigger(
            "postgresql",
            _fields(jobs, query=ALL_JOBS, userName="tidal"),
            {"password": "tidal-superuser"},
        ),
    )
    postgres_server.reset_calls(jobs.name)
    assert [s.value for s in await sample_all([a, b, superuser])] == [9.0, 9.0, 9.0]
    assert postgres_server.calls(ALL_JOBS, jobs.name) == 2
    assert postgres_server.calls(other, jobs.name) == 1
    hub: SqlHub = await a.hub()
    assert await b.hub() is hub
    assert await superuser.hub() is not hub
    assert hub.connects == 2
    for s in (a, b, superuser):
        await s.aclose()


# -- TLS ------------------------------------------------------------------------------------------

ENCRYPTED = "SELECT CASE WHEN ssl THEN 1 ELSE 0 END FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


@pytest.fixture
def tls_db(postgres_factory: Callable[..., PostgresServer]) -> SqlDatabase:
    return tls_database(postgres_factory, "postgres.test")


@pytest.mark.parametrize(
    ("sslmode", "encrypted"),
    [
        pytest.param("require", 1.0, id="require"),
        pytest.param("prefer", 1.0, id="prefer"),
        pytest.param("disable", 0.0, id="disable"),
    ],
)
async def test_sslmode_decides_whether_the_connection_is_encrypted(
    tls_db: SqlDatabase, pool: ClientPool, sslmode: str, encrypted: float
) -> None:
    meta = _fields(tls_db, query=ENCRYPTED, sslmode=sslmode)
    scaler = sql_scaler(pool, trigger("postgresql", meta, {"password": "pw"}))
    assert (await scaler.sample(0.0)).value == encrypted
    await scaler.aclose()


async def test_verify_full_against_an_untrusted_certificate_is_a_scaler_error(
    tls_db: SqlDatabase, pool: ClientPool
) -> None:
    connection = _url(tls_db).replace("sslmode=disable", "sslmode=verify-full&sslrootcert=system")
    scaler = sql_scaler(
        pool,
        trigger(
            "postgresql", {"query": ENCRYPTED, "targetQueryValue": "1"}, {"connection": connection}
        ),
    )
    await assert_connection_error(scaler, "certificate verify failed", "pw@")


async def test_require_against_a_server_without_tls_is_a_scaler_error(
    jobs: SqlDatabase, pool: ClientPool
) -> None:
    meta = _fields(jobs, query=COUNT, sslmode="require")
    scaler = sql_scaler(pool, trigger("postgresql", meta, {"password": jobs.password}))
    await assert_connection_error(scaler, "does not support SSL", jobs.password)


@pytest.mark.parametrize(
    "keyword",
    [
        pytest.param("sslrootcert=/etc/ssl/certs/ca.pem", id="sslrootcert-path"),
        pytest.param("sslkey=/var/run/secrets/kubernetes.io/serviceaccount/token", id="sslkey"),
        pytest.param("passfile=/root/.pgpass", id="passfile"),
        pytest.param("sslkeylogfile=/tmp/keys", id="sslkeylogfile"),
    ],
)
def test_connection_strings_naming_files_are_refused(keyword: str) -> None:
    """Tidal never reads files from user-supplied paths; libpq would."""
    meta = {"query": "SELECT 1", "targetQueryValue": "1"}
    auth = {"connection": f"host=127.0.0.1 dbname=app user=u {keyword}"}
    with pytest.raises(ConfigError, match="never reads files from user-supplied paths"):
        prepare(trigger("postgresql", meta, auth))
