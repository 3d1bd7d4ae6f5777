"""ElasticMQ, an SQS-compatible server, on 127.0.0.1 (a free port), config in a temp dir.

The jars come from Maven Central (``org.elasticmq:elasticmq-server_2.13``, runtime classpath
only) through ``deploy/local/build.sh elasticmq`` into the tools cache. ElasticMQ speaks SQS's
JSON protocol (``X-Amz-Target: AmazonSQS.<Action>``, ``application/x-amz-json-1.0``), which
current boto3 and the AWS SDKs use: checked with boto3 1.44 (CreateQueue, SendMessage with
DelaySeconds, ReceiveMessage, GetQueueAttributes with the three approximate counts, GetQueueUrl,
QueueDoesNotExist on a missing queue). goaws, the other candidate, answers 400 to that protocol.

ElasticMQ does not check request signatures: any access key is accepted. Queue URLs it hands out
are ``http://127.0.0.1:<port>/000000000000/<queue>`` (``node-address`` is set to the bound
address). Delayed messages stay delayed for the queue's or message's DelaySeconds, and a
received message stays in flight for its visibility timeout, as on AWS.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import boto3

from localenv.paths import tools_dir
from localenv.process import ComponentError, ManagedProcess, ProcessComponent, free_port

HOST = "127.0.0.1"
VERSION = "1.6.11"
ACCOUNT = "000000000000"
REGION = "us-east-1"
MAIN_CLASS = "org.elasticmq.server.Main"
JAVA_OPTS = ["-Xms64m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]

CONFIG = """include classpath("application.conf")
node-address {{ protocol = http, host = "{host}", port = {port}, context-path = "" }}
rest-sqs {{ enabled = true, bind-port = {port}, bind-hostname = "{host}", sqs-limits = strict }}
rest-stats {{ enabled = false }}
aws {{ region = "{region}", accountId = "{account}" }}
"""


def elasticmq_libs(version: str = VERSION) -> Path:
    return tools_dir() / f"elasticmq-{version}" / "libs"


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java") or "java"


def _list_queues(endpoint: str) -> bool:
    """One unsigned JSON-protocol call: ElasticMQ answers 200 once its SQS API serves."""
    request = urllib.request.Request(
        endpoint + "/",
        data=b"{}",
        headers={
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": "AmazonSQS.ListQueues",
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=1.0) as resp:
        return int(resp.status) == 200 and isinstance(json.loads(resp.read() or b"{}"), dict)


class ElasticMqServer(ProcessComponent):
    """One ElasticMQ JVM; `client()` gives a boto3 SQS client for setting up queues."""

    access_key = "tidal-sqs"
    secret_key = "tidal-sqs-secret"  # never checked by ElasticMQ; a loopback-only test server
    region = REGION
    account = ACCOUNT

    def __init__(self, run_dir: Path, *, name: str = "elasticmq", port: int | None = None) -> None:
        self.name = name
        self.host = HOST
        self.port = port or free_port()
        self.conf_dir = Path(tempfile.mkdtemp(prefix=f"tidal-{name}-"))
        self.config = self.conf_dir / "elasticmq.conf"
        self.libs = elasticmq_libs()
        argv = [
            _java(),
            *JAVA_OPTS,
            f"-Dconfig.file={self.config}",
            "-cp",
            f"{self.libs}/*",
            MAIN_CLASS,
        ]
        self._proc = ManagedProcess(
            name,
            argv,
            run_dir,
            ready=lambda: _list_queues(self.endpoint),
            timeout=90.0,
            cwd=self.conf_dir,
        )

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def queue_url(self, queue: str) -> str:
        return f"{self.endpoint}/{self.account}/{queue}"

    def client(self, endpoint: str | None = None) -> Any:
        """A boto3 SQS client of this server (or of `endpoint`, e.g. a proxy in front of it)."""
        return boto3.client(
            "sqs",
            endpoint_url=endpoint or self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def _check_start(self) -> None:
        if not any(self.libs.glob("elasticmq-server_*.jar")):
            raise ComponentError(
                self.name, self.log, f"{self.libs} has no ElasticMQ jars (run build.sh elasticmq)"
            )

    def _prepare(self) -> None:
        self.config.write_text(
            CONFIG.format(host=HOST, port=self.port, region=self.region, account=self.account)
        )

    def remove(self) -> None:
        """Stop the server and delete its temp dir (the log stays in the run dir)."""
        self.stop()
        shutil.rmtree(self.conf_dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"ElasticMqServer({self.endpoint})"
