"""Every manifest the repository shows a user passes `tidal check`: the ```yaml blocks of
README.md and docs/*.md, deploy/manifests/ and docs/examples/, and KEDA's own manifests of the
compatibility corpus (its {{.Placeholders}} filled in as tests/compat does).

A block that is a KEDA-shaped example Tidal deliberately does not run carries a
`# tidal-check: skip` line (see docs/check-and-webhook.md); keep that rare."""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path

import pytest

from scaler.commands.check import documents
from scaler.manifest_set import Document, check_documents

REPO = Path(__file__).resolve().parents[2]
_BLOCK = re.compile(r"^```ya?ml[ \t]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")
CORPUS_VALUES = {
    "TestNamespace": "compat",
    "BootstrapServer": "127.0.0.1:9092",
    "RedisAddress": "127.0.0.1:6379",
    "RedisHost": "127.0.0.1",
    "RedisPort": "6379",
    "RedisPassword": "cGFzc3dvcmQ=",
    "StartMin": "0",
    "EndMin": "1",
    "NatsServerMonitoringEndpoint": "127.0.0.1:8222",
    "NatsAddress": "nats://127.0.0.1:4222",
    "PrometheusServer": "http://127.0.0.1:9090",
    "MetricsApiUrl": "http://127.0.0.1:8080/api/v1/stats",
    "MetricsApiKey": "a2V5",
    "AwsEndpoint": "http://127.0.0.1:9000",
    "AwsAccessKeyID": "YWNjZXNz",
    "AwsSecretAccessKey": "c2VjcmV0",
    "AwsAccessKeyIDBase64": "YWNjZXNz",
    "AwsSecretAccessKeyBase64": "c2VjcmV0",
    "AwsRegion": "us-east-1",
    "SqsQueue": "http://127.0.0.1:9324/000000000000/Payments_EU-Settlement.fifo",
    "RabbitMQConnection": "amqp://user:password@127.0.0.1:5672/",
    "RabbitMQConnectionBase64": base64.b64encode(b"amqp://user:password@127.0.0.1:5672/").decode(),
    # Base64 of a libpq URL and of a Go MySQL DSN.
    "PostgreSQLConnectionStringBase64": base64.b64encode(
        b"postgresql://user:password@127.0.0.1:5432/test_db?sslmode=disable"
    ).decode(),
    "MySQLConnectionString": base64.b64encode(
        b"user:password@tcp(127.0.0.1:3306)/test_db"
    ).decode(),
}


def markdown_documents() -> list[Document]:
    docs: list[Document] = []
    for md in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for i, match in enumerate(_BLOCK.finditer(md.read_text())):
            docs += documents(f"{md.relative_to(REPO)}#yaml{i}", match.group(1))
    return docs


def file_documents(*folders: str) -> list[Document]:
    docs: list[Document] = []
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.y*ml")):
            docs += documents(str(path.relative_to(REPO)), path.read_text())
    return docs


def corpus_documents() -> list[Document]:
    docs: list[Document] = []
    for path in sorted((REPO / "tests/compat/manifests").glob("*.yaml")):
        text = _PLACEHOLDER.sub(lambda m: CORPUS_VALUES[m.group(1)], path.read_text())
        docs += documents(str(path.relative_to(REPO)), text)
    return docs


@pytest.mark.parametrize(
    ("collect", "at_least"),
    [
        pytest.param(markdown_documents, 2, id="readme-and-docs"),
        pytest.param(lambda: file_documents("deploy/manifests", "docs/examples"), 0, id="deploy"),
        pytest.param(corpus_documents, 20, id="compat-corpus"),
    ],
)
def test_every_shown_manifest_passes(collect: object, at_least: int) -> None:
    """Each source is checked as its own set (a corpus file's objects share a namespace; the
    docs' examples are independent of each other)."""
    assert callable(collect)
    docs: list[Document] = collect()
    findings: list[str] = []
    checked = 0
    for source in sorted({d.source for d in docs}):
        found, n = asyncio.run(check_documents([d for d in docs if d.source == source]))
        findings += [f.line() for f in found]
        checked += n
    assert findings == []
    assert checked >= at_least  # the extraction found what it should
