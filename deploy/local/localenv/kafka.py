"""A single-node KRaft Kafka broker run from the jars deploy/local/build.sh resolves.

Kafka 3.9 logs through reload4j (log4j 1 properties); Kafka 4.x through log4j2. Readiness is a
real Metadata request on the client listener that lists this broker (so it is unfenced).

``scram={"user": "password"}`` adds a SASL_PLAINTEXT listener (``sasl_bootstrap``) accepting
SCRAM-SHA-256 and SCRAM-SHA-512; the users are created for both mechanisms when the storage is
formatted (``StorageTool format --add-scram``, Kafka >= 3.5), so they exist before the broker
serves. The PLAINTEXT listener stays (test-side producers and the inter-broker listener use it).
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from localenv.paths import kafka_libs
from localenv.process import ComponentError, ManagedProcess, ProcessComponent, free_port

HOST = "127.0.0.1"
NODE_ID = 1
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
JAVA_OPTS = ["-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true"]

LOG4J1 = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaConfig=WARN
log4j.logger.org.apache.kafka.common.config=WARN
log4j.logger.state.change.logger=WARN
"""

LOG4J2 = """\
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.config.name = org.apache.kafka.common.config
logger.config.level = warn
logger.kafkaconfig.name = kafka.server.KafkaConfig
logger.kafkaconfig.level = warn
logger.statechange.name = state.change.logger
logger.statechange.level = warn
"""


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = b""
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        buf += chunk
    return buf


def metadata_brokers(port: int, host: str = HOST) -> list[tuple[int, str, int]]:
    """The live brokers a Metadata v4 request to host:port returns, as (node_id, host, port).

    v4 is served by Kafka 1.0 through 4.x (KIP-896 removed only v0-v3).
    """
    client_id = b"localenv"
    header = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id
    body = struct.pack(">i?", -1, False)  # topics = null (all), allow_auto_topic_creation = false
    request = header + body
    with socket.create_connection((host, port), timeout=2.0) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        data = _recv_exact(sock, size)
    _correlation, _throttle, count = struct.unpack_from(">iii", data, 0)
    offset = 12
    brokers = []
    for _ in range(count):
        node_id, host_len = struct.unpack_from(">ih", data, offset)
        offset += 6
        broker_host = data[offset : offset + host_len].decode()
        offset += host_len
        broker_port, rack_len = struct.unpack_from(">ih", data, offset)
        offset += 6 + max(rack_len, 0)
        brokers.append((node_id, broker_host, broker_port))
    return brokers


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java") or "java"


class KafkaBroker(ProcessComponent):
    """Broker + controller in one JVM (KRaft), loopback listeners on two free ports."""

    stop_grace = 20.0

    def __init__(
        self,
        run_dir: Path,
        version: str = "3.9.1",
        *,
        name: str | None = None,
        port: int | None = None,
        controller_port: int | None = None,
        scram: Mapping[str, str] | None = None,
    ) -> None:
        self.version = version
        self.scram = dict(scram or {})
        for user, password in self.scram.items():
            if not user or any(c in user + password for c in ',=[]"'):
                raise ValueError('SCRAM user names and passwords must not contain , = [ ] "')
        self.sasl_port = free_port() if self.scram else None
        self.name = name or f"kafka-{version}"
        self.host = HOST
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.run_dir = run_dir
        self.home = run_dir / self.name
        self.data_dir = self.home / "data"
        self.home.mkdir(parents=True, exist_ok=True)
        self.libs = kafka_libs(version)
        self.config = self._write_config()
        self._java_cmd = [_java(), *JAVA_OPTS, self._log_option(), "-cp", f"{self.libs}/*"]
        self._proc = ManagedProcess(
            self.name,
            [*self._java_cmd, "kafka.Kafka", str(self.config)],
            run_dir,
            ready=self._ready,
            timeout=120.0,
            cwd=self.home,
        )

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        """The SASL_PLAINTEXT (SCRAM) listener; only with ``scram=``."""
        if self.sasl_port is None:
            raise ValueError(f"{self.name} has no SASL listener (start it with scram=...)")
        return f"{self.host}:{self.sasl_port}"

    @property
    def major(self) -> int:
        return int(self.version.split(".", 1)[0])

    def _log_option(self) -> str:
        if self.major >= 4:
            path = self.home / "log4j2.properties"
            path.write_text(LOG4J2)
            return f"-Dlog4j2.configurationFile={path}"
        path = self.home / "log4j.properties"
        path.write_text(LOG4J1)
        return f"-Dlog4j.configuration=file:{path}"

    def _write_config(self) -> Path:
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            "controller.quorum.voters": f"{NODE_ID}@{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "log.cleaner.dedupe.buffer.size": "8388608",
            "auto.create.topics.enable": "true",
            # After a SIGKILL the old incarnation blocks re-registration until its session
            # expires (default 9 s); keep that short so kill() + restart() is quick.
            "broker.heartbeat.interval.ms": "1000",
            "broker.session.timeout.ms": "4000",
        }
        if self.sasl_port is not None:
            sasl = f"SASL_PLAINTEXT://{HOST}:{self.sasl_port}"
            settings["listeners"] += f",{sasl}"
            settings["advertised.listeners"] += f",{sasl}"
            settings["listener.security.protocol.map"] += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
            settings["sasl.enabled.mechanisms"] = ",".join(SCRAM_MECHANISMS)
            for mechanism in SCRAM_MECHANISMS:
                key = f"listener.name.sasl_plaintext.{mechanism.lower()}.sasl.jaas.config"
                settings[key] = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        path = self.home / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        return path

    def _ready(self) -> bool:
        return (NODE_ID, HOST, self.port) in metadata_brokers(self.port)

    def _format_storage(self) -> None:
        """Format the log dir once (a restart reuses it, keeping topics and offsets)."""
        if (self.data_dir / "meta.properties").exists():
            return
        if not (self.libs.parent / ".complete").exists():
            raise ComponentError(
                self.name, self.log, f"jars not built in {self.libs} (run deploy/local/build.sh)"
            )
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        argv = [*self._java_cmd, "kafka.tools.StorageTool", "format"]
        # "=" form: a base64url id may start with "-", which the tool's parser reads as a flag.
        argv += [f"--cluster-id={cluster_id}", "-c", str(self.config)]
        for user, password in self.scram.items():
            for mechanism in SCRAM_MECHANISMS:
                argv += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
        with self.log.open("ab") as log:
            shown = argv[: argv.index("--add-scram")] if self.scram else argv  # no passwords
            log.write(f"### {time.strftime('%H:%M:%S')} format: {' '.join(shown)}\n".encode())
            log.flush()
            try:
                result = subprocess.run(
                    argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.home, timeout=120
                )
            except subprocess.TimeoutExpired as exc:
                raise ComponentError(self.name, self.log, "storage format timed out") from exc
        if result.returncode != 0:
            raise ComponentError(
                self.name, self.log, f"storage format exited with {result.returncode}"
            )

    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(p for p in (self.port, self.controller_port, self.sasl_port) if p is not None)

    def _check_start(self) -> None:
        if not any(self.libs.glob("slf4j-reload4j-*.jar")) and not any(
            self.libs.glob("log4j-slf4j*-impl-*.jar")
        ):
            print(f"[localenv] warning: no SLF4J binding in {self.libs}: the broker log is empty")

    def _prepare(self) -> None:
        self._format_storage()

    def __repr__(self) -> str:
        return f"KafkaBroker({self.version}, bootstrap={self.bootstrap})"
