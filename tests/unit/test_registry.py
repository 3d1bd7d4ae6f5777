"""The scaler registry (lazy built-ins, extras, entry points) and the shared client pool."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from scaler.builder import build_triggers, duplicate_metric_names
from scaler.clients import ClientKey, ClientPool, fingerprint
from scaler.contract import MetricSpec, TriggerContext
from scaler.decide import TriggerView
from scaler.errors import ConfigError, QueryError
from scaler.object_parser import parse_scaled_object
from scaler.objects import Trigger
from scaler.registry import BUILTINS, Registry, ScalerEntry, build_scaler, known_types, prepare
from scaler.resource_trigger import RESOURCE_TRIGGER_TYPES, ResourceTrigger, is_resource_trigger

REPO = Path(__file__).resolve().parents[2]


def _trigger(kind: str, metadata: dict[str, str], **kw: object) -> TriggerContext:
    return TriggerContext("ns", "so", 0, kind, "", metadata, **kw)  # type: ignore[arg-type]


def test_importing_the_registry_imports_no_plugin_or_broker_library() -> None:
    code = textwrap.dedent(
        """
        import sys
        import scaler.registry, scaler.params, scaler.clients, scaler.auth
        heavy = ("scalers", "redis", "croniter", "aiokafka", "nats", "boto3")
        print(",".join(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def test_known_types_cover_every_builtin() -> None:
    types = known_types()
    for name in (
        "cron",
        "redis",
        "redis-cluster",
        "redis-sentinel",
        "redis-streams",
        "redis-cluster-streams",
        "redis-sentinel-streams",
        "prometheus",
        "metrics-api",
        "kafka",
        "nats-jetstream",
        "aws-s3",
        "cpu",
        "memory",
    ):
        assert name in types
    assert BUILTINS["kafka"] == ScalerEntry("scalers.kafka.scaler:KafkaScaler", "kafka")
    assert BUILTINS["nats-jetstream"] == ScalerEntry(
        "scalers.nats_jetstream:NatsJetStreamScaler", "nats"
    )
    assert BUILTINS["aws-s3"] == ScalerEntry("scalers.s3:S3Scaler", "s3")


def test_unknown_type_lists_known_types() -> None:
    with pytest.raises(ConfigError) as info:
        build_scaler(_trigger("gcp-pubsub", {}), ClientPool())
    message = str(info.value)
    assert message.startswith("unknown trigger type 'gcp-pubsub'; known types: ")
    assert "cron" in message
    assert "redis-streams" in message


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path for throwaway modules and distributions."""
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_missing_extra_names_the_extra(plugin_dir: Path) -> None:
    (plugin_dir / "tidal_needs_lib.py").write_text("import tidal_no_such_library_xyz\n")
    registry = Registry(
        {"kafka": ScalerEntry("tidal_needs_lib:KafkaScaler", "kafka")}, entry_points=list
    )
    with pytest.raises(ConfigError) as info:
        registry.load("kafka")
    assert str(info.value) == (
        "trigger type 'kafka' needs the 'kafka' extra: pip install 'tidal[kafka]'"
    )


def test_missing_plugin_module_is_not_blamed_on_the_extra() -> None:
    registry = Registry({"x": ScalerEntry("tidal_absent_module:X", "x")}, entry_points=list)
    with pytest.raises(ConfigError, match="trigger type 'x' is not available in this build"):
        registry.load("x")


def _write_distribution(root: Path, dist: str, entries: dict[str, str], module: str) -> None:
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[tidal.scalers]\n{lines}\n")
    (root / f"{module}.py").write_text(
        textwrap.dedent(
            """
            from scaler.contract import MetricSpec, Sample, metric_name
            from scaler.params import Param


            class EchoScaler:
                PARAMS = (Param("value", "float", required=True),)

                def __init__(self, config, trigger, clients):
                    self.value = config.get_float("value")
                    self.name = metric_name(trigger.index, "echo")

                def metric_spec(self):
                    return MetricSpec(self.name, 1.0)

                async def sample(self, now):
                    return Sample(self.value, self.value > 0, now)

                async def aclose(self):
                    return None
            """
        )
    )


async def test_third_party_scaler_from_entry_point(plugin_dir: Path) -> None:
    _write_distribution(
        plugin_dir, "tidal_echo", {"echo": "tidal_echo_mod:EchoScaler"}, "tidal_echo_mod"
    )
    registry = Registry()
    assert "echo" in registry.known_types()
    scaler = registry.build(_trigger("echo", {"value": "2.5"}), ClientPool())
    assert scaler.metric_spec() == MetricSpec("s0-echo", 1.0)
    sample = await scaler.sample(100.0)
    assert (sample.value, sample.active, sample.observed_at) == (2.5, True, 100.0)
    assert registry.entry("echo").origin == "tidal_echo"
    factory = registry.load("echo")  # written before validate and SAMPLED: the defaults
    prepared = registry.prepare(_trigger("echo", {"value": "1"}))
    assert factory.SAMPLED is True
    assert list(factory.validate(prepared.config, prepared.trigger)) == []


def test_builtin_is_never_replaced_by_an_entry_point(
    plugin_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write_distribution(
        plugin_dir, "tidal_evil", {"cron": "tidal_evil_mod:EchoScaler"}, "tidal_evil_mod"
    )
    registry = Registry()
    with caplog.at_level(logging.WARNING, logger="scaler.registry"):
        assert registry.entry("cron") == BUILTINS["cron"]
        registry.known_types()
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1
    assert refused[0].__dict__["trigger_type"] == "cron"
    assert refused[0].__dict__["origin"] == "tidal_evil"
    factory = registry.load("cron")
    assert factory.__module__ == "scalers.cron"


def test_prepare_returns_unknown_keys_and_builds_nothing() -> None:
    trigger = _trigger(
        "cron",
        {
            "timezone": "UTC",
            "start": "0 8 * * *",
            "end": "0 9 * * *",
            "desiredReplicas": "2",
            "desiredReplica": "3",
        },
    )
    prepared = prepare(trigger)
    assert prepared.config.unknown_keys == ("desiredReplica",)
    from scalers.cron import CronScaler

    assert prepared.factory is CronScaler


def test_every_builtin_loads_as_a_scaler_factory() -> None:
    registry = Registry(entry_points=list)
    for trigger_type in BUILTINS:
        factory = registry.load(trigger_type)  # every extra is installed for the tests
        assert factory.SAMPLED is not is_resource_trigger(trigger_type), trigger_type
        assert isinstance(factory.PARAMS, tuple)
    assert {t for t, e in BUILTINS.items() if e == BUILTINS["cpu"]} == RESOURCE_TRIGGER_TYPES
    assert registry.load("cpu") is ResourceTrigger


_SCALER_METHODS = """
    def metric_spec(self):
        return None

    async def sample(self, now):
        return None

    async def aclose(self):
        return None
"""


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        pytest.param(
            "def Plugin(config, trigger, clients):\n    return None\n",
            "it is not a class",
            id="function",
        ),
        pytest.param(
            f"class Plugin:\n{_SCALER_METHODS}",
            "PARAMS is not a tuple of scaler.params.Param",
            id="no-params",
        ),
        pytest.param(
            f"class Plugin:\n    PARAMS = ('value',)\n{_SCALER_METHODS}",
            "PARAMS is not a tuple of scaler.params.Param",
            id="params-not-param",
        ),
        pytest.param(
            "class Plugin:\n    PARAMS = ()\n\n    def metric_spec(self):\n        return None\n",
            "it has no sample() method; it has no aclose() method",
            id="no-sample",
        ),
        pytest.param(
            f"class Plugin:\n    PARAMS = ()\n    validate = 3\n{_SCALER_METHODS}",
            "validate is not callable",
            id="validate-not-callable",
        ),
        pytest.param(
            f"class Plugin:\n    PARAMS = ()\n    SAMPLED = 'no'\n{_SCALER_METHODS}",
            "SAMPLED is not True or False",
            id="sampled-not-bool",
        ),
        pytest.param(
            f"class Plugin:\n    PARAMS = ()\n    SAMPLED = False\n{_SCALER_METHODS}",
            "SAMPLED must be False for cpu and memory (the HPA reads them) and True otherwise",
            id="unsampled-external",
        ),
    ],
)
def test_third_party_class_that_is_no_scaler_factory_is_refused_at_load(
    plugin_dir: Path, source: str, problem: str
) -> None:
    module = f"tidal_bad_{abs(hash(source))}"  # one module per case: imports are cached
    (plugin_dir / f"{module}.py").write_text(source)
    entry = importlib.metadata.EntryPoint("bad", f"{module}:Plugin", "tidal.scalers")
    registry = Registry({}, entry_points=lambda: [entry])
    with pytest.raises(ConfigError) as info:
        registry.load("bad")
    assert str(info.value) == (
        f"trigger type 'bad': {module}:Plugin is not a scaler class: {problem}"
    )


def test_a_sampled_class_behind_a_resource_type_is_refused() -> None:
    registry = Registry({"cpu": BUILTINS["cron"]}, entry_points=list)
    with pytest.raises(ConfigError, match="SAMPLED must be False for cpu and memory"):
        registry.load("cpu")


async def test_resource_triggers_are_decided_in_one_place() -> None:
    raw: dict[str, Any] = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "so", "namespace": "ns", "uid": "u1", "generation": 1},
        "spec": {
            "scaleTargetRef": {"name": "app"},
            "triggers": [
                {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "60"}},
                {
                    "type": "cron",
                    "metadata": {
                        "timezone": "UTC",
                        "start": "0 8 * * *",
                        "end": "0 9 * * *",
                        "desiredReplicas": "2",
                    },
                },
            ],
        },
    }
    so = parse_scaled_object(raw)

    async def no_fetch(*_: object) -> None:
        return None

    built = await build_triggers(
        so,
        registry=Registry(entry_points=list),
        clients=ClientPool(),
        fetch=no_fetch,
        auth_lookup=no_fetch,
        pod_spec=None,
        cluster_namespace="keda",
        timeout=3.0,
    )
    assert [(t.trigger.is_resource, t.scaler is None) for t in built] == [
        (True, True),
        (False, False),
    ]
    for trigger_type in ("cpu", "memory", "cron", "redis", "my-plugin"):
        resource = trigger_type in ("cpu", "memory")
        assert is_resource_trigger(trigger_type) is resource
        assert Trigger(0, trigger_type).is_resource is resource
        assert TriggerView("m", trigger_type).is_resource is resource


@pytest.mark.parametrize(
    ("kind", "metadata", "metric_type", "spec"),
    [
        pytest.param(
            "cpu",
            {"value": "60"},
            "Utilization",
            MetricSpec("cpu", 60.0, "Utilization", "Resource"),
            id="cpu-utilization",
        ),
        pytest.param(
            "memory",
            {"value": "512", "containerName": "app"},
            "AverageValue",
            MetricSpec("memory", 512.0, "AverageValue", "ContainerResource", "app"),
            id="memory-container",
        ),
    ],
)
async def test_resource_triggers_make_resource_metrics_and_are_never_sampled(
    kind: str, metadata: dict[str, str], metric_type: str, spec: MetricSpec
) -> None:
    scaler = build_scaler(_trigger(kind, metadata, metric_type=metric_type), ClientPool())
    assert scaler.metric_spec() == spec
    assert getattr(scaler, "SAMPLED", True) is False
    with pytest.raises(QueryError):
        await scaler.sample(0.0)


@pytest.mark.parametrize(
    ("metadata", "metric_type", "problem"),
    [
        pytest.param({}, "Utilization", "missing required parameter 'value'", id="no-value"),
        pytest.param({"value": "50"}, "Value", "metricType 'Value' is not supported", id="value"),
        pytest.param(
            {"value": "50", "type": "Utilization"},
            "Utilization",
            "parameter 'type' is deprecated",
            id="deprecated-type",
        ),
    ],
)
def test_resource_trigger_problems(
    metadata: dict[str, str], metric_type: str, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        build_scaler(_trigger("cpu", metadata, metric_type=metric_type), ClientPool())


# -- ClientPool --------------------------------------------------------------------------------


class Client:
    def __init__(self, n: int) -> None:
        self.n = n
        self.closed = False


async def test_pool_shares_one_client_between_concurrent_acquirers() -> None:
    pool = ClientPool()
    created: list[Client] = []
    gate = asyncio.Event()

    async def factory() -> Client:
        await gate.wait()
        created.append(Client(len(created)))
        return created[-1]

    async def close(client: Client) -> None:
        client.closed = True

    key = ClientKey("redis", "127.0.0.1:1", fingerprint("user", "pw"))
    tasks = [asyncio.create_task(pool.acquire(key, factory, close)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    leases = await asyncio.gather(*tasks)
    assert len(created) == 1
    assert {id(lease.client) for lease in leases} == {id(created[0])}
    assert pool.refs(key) == 5
    for lease in leases[:-1]:
        await lease.release()
    assert not created[0].closed
    await leases[-1].release()
    await leases[-1].release()  # idempotent
    assert created[0].closed
    assert len(pool) == 0


async def test_pool_keys_differ_by_credential_fingerprint() -> None:
    pool = ClientPool()
    counter = iter(range(100))

    async def factory() -> Client:
        return Client(next(counter))

    async def close(client: Client) -> None:
        client.closed = True

    a = await pool.acquire(ClientKey("http", "h:1", fingerprint("a")), factory, close)
    b = await pool.acquire(ClientKey("http", "h:1", fingerprint("b")), factory, close)
    assert a.client is not b.client
    assert "hunter2" not in fingerprint("hunter2")
    await pool.aclose()
    assert a.client.closed
    assert b.client.closed


async def test_pool_failed_creation_is_retried_on_next_acquire() -> None:
    pool = ClientPool()
    attempts = 0

    async def factory() -> Client:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise OSError("refused")
        return Client(attempts)

    async def close(client: Client) -> None:
        client.closed = True

    key = ClientKey("x", "e")
    with pytest.raises(OSError, match="refused"):
        await pool.acquire(key, factory, close)
    assert len(pool) == 0
    lease = await pool.acquire(key, factory, close)
    assert lease.client.n == 2


async def test_pool_closes_a_client_whose_only_acquirer_was_cancelled() -> None:
    pool = ClientPool()
    gate = asyncio.Event()
    made: list[Client] = []

    async def factory() -> Client:
        await gate.wait()
        made.append(Client(1))
        return made[0]

    async def close(client: Client) -> None:
        client.closed = True

    task = asyncio.create_task(pool.acquire(ClientKey("x", "e"), factory, close))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    await pool.aclose()
    assert len(made) == 1
    assert made[0].closed
    assert len(pool) == 0


@pytest.mark.parametrize(
    ("names", "problems"),
    [
        pytest.param(["s0-redis-a", "s1-redis-b"], [], id="distinct"),
        pytest.param(["s0-x", "s0-x"], ["duplicate external metric name s0-x"], id="same"),
        pytest.param(
            ["s0-redis-Jobs", "s0-redis-jobs"],
            [
                "external metric names s0-redis-Jobs, s0-redis-jobs differ only in case "
                "(the HPA asks for metric names in lower case)"
            ],
            id="differ-in-case",
        ),
    ],
)
def test_duplicate_metric_names_ignore_case(names: list[str], problems: list[str]) -> None:
    assert duplicate_metric_names(names) == problems
