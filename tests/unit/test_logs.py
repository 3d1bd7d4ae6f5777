"""scaler.logs: constant messages, variables as structured fields, one JSON object or one text
line per record, `configure` wiring the root logger for `--log-format` / `--log-level`."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from scaler import logs


def _record(
    msg: str = "trigger failing",
    level: int = logging.WARNING,
    extra: dict[str, Any] | None = None,
    exc: bool = False,
) -> logging.LogRecord:
    logger = logging.getLogger("scaler.daemon")
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    return logger.makeRecord(logger.name, level, __file__, 1, msg, (), exc_info, extra=extra or {})


FIELDS = {"object": "ns/worker", "trigger": "s0-redis-jobs", "failures": 3, "error": "refused"}


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    """Restore the root logger (handlers, level) and the noisy loggers after `configure`."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {n: logging.getLogger(n).level for n in ("aiohttp.access", "kafka", "botocore")}
    try:
        yield root
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, lvl in noisy.items():
            logging.getLogger(name).setLevel(lvl)


def test_fields_of_returns_only_extra_fields() -> None:
    assert logs.fields_of(_record(extra=FIELDS)) == FIELDS
    assert logs.fields_of(_record()) == {}


def test_json_line_has_message_level_logger_time_and_fields() -> None:
    line = logs.JsonFormatter().format(_record(extra=FIELDS))
    assert "\n" not in line
    out = json.loads(line)
    assert out["msg"] == "trigger failing"
    assert out["level"] == "warning"
    assert out["logger"] == "scaler.daemon"
    assert out["ts"].endswith("Z")
    assert out["ts"][:4].isdigit()
    for key, value in FIELDS.items():
        assert out[key] == value


def test_json_keeps_values_json_cannot_encode_as_text() -> None:
    out = json.loads(logs.JsonFormatter().format(_record(extra={"when": object, "n": {1, 2}})))
    assert isinstance(out["when"], str)
    assert isinstance(out["n"], str)


def test_json_exception_is_inside_the_one_object() -> None:
    line = logs.JsonFormatter().format(_record(extra=FIELDS, exc=True))
    assert "\n" not in line  # the traceback is escaped inside the JSON string
    out = json.loads(line)
    assert "ValueError: boom" in out["exc"]
    assert out["object"] == "ns/worker"


@pytest.mark.parametrize(
    ("level", "name"),
    [
        pytest.param(logging.DEBUG, "debug", id="debug"),
        pytest.param(logging.INFO, "info", id="info"),
        pytest.param(logging.WARNING, "warning", id="warning"),
        pytest.param(logging.ERROR, "error", id="error"),
    ],
)
def test_json_level_names_are_lower_case(level: int, name: str) -> None:
    assert json.loads(logs.JsonFormatter().format(_record(level=level)))["level"] == name


def test_text_line_has_level_message_then_fields() -> None:
    line = logs.TextFormatter().format(_record(extra=FIELDS))
    assert "\n" not in line
    assert "WARNING" in line
    head, _, tail = line.partition("trigger failing")
    assert "WARNING" in head
    for key, value in FIELDS.items():
        assert f"{key}={value}" in tail


def test_text_exception_follows_the_line() -> None:
    line = logs.TextFormatter().format(_record(extra=FIELDS, exc=True))
    first, _, rest = line.partition("\n")
    assert "trigger failing" in first
    assert "object=ns/worker" in first
    assert "ValueError: boom" in rest


def test_structured_fields_cannot_replace_the_json_envelope() -> None:
    """A field named like an envelope key (ts, level, logger) must not overwrite the record's
    own level or logger: a log pipeline filters on them."""
    extra = {"level": "debug", "logger": "other", "ts": "then"}
    out = json.loads(logs.JsonFormatter().format(_record(level=logging.ERROR, extra=extra)))
    assert out["level"] == "error"
    assert out["logger"] == "scaler.daemon"
    assert out["ts"] != "then"


def test_text_record_stays_on_one_line_when_a_field_holds_a_newline() -> None:
    """An error text from a broker may contain newlines; one record is still one line, so no
    value can forge a second log line (log injection)."""
    forged = "refused\n12:00:00.000 INFO    scaled object=ns/other to=100"
    line = logs.TextFormatter().format(_record(extra={"error": forged}))
    assert "\n" not in line


def test_text_field_with_spaces_is_one_token() -> None:
    """logfmt-style: a value with spaces is quoted, so `key=value` pairs stay parseable."""
    line = logs.TextFormatter().format(_record(extra={"error": "connection refused", "n": 1}))
    assert 'error="connection refused"' in line
    assert "n=1" in line


@pytest.mark.parametrize(
    ("fmt", "formatter"),
    [
        pytest.param("json", logs.JsonFormatter, id="json"),
        pytest.param("text", logs.TextFormatter, id="text"),
    ],
)
def test_configure_installs_one_handler_with_the_format(
    root_logging: logging.Logger, fmt: str, formatter: type[logging.Formatter]
) -> None:
    logs.configure(fmt, "debug")
    assert len(root_logging.handlers) == 1
    handler = root_logging.handlers[0]
    assert isinstance(handler.formatter, formatter)
    assert root_logging.level == logging.DEBUG
    assert logging.getLogger("aiohttp.access").level == logging.WARNING
    logs.configure(fmt, "warning")  # configuring again replaces, never duplicates
    assert len(root_logging.handlers) == 1
    assert root_logging.level == logging.WARNING


def test_configured_json_lines_reach_stderr(
    root_logging: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("json", "info")
    logging.getLogger("scaler.daemon").debug("hidden", extra={"object": "ns/a"})
    logging.getLogger("scaler.daemon").warning("trigger failing", extra=FIELDS)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    out = json.loads(err[0])
    assert (out["msg"], out["object"], out["failures"]) == ("trigger failing", "ns/worker", 3)


def test_unknown_level_is_refused(root_logging: logging.Logger) -> None:
    with pytest.raises(ValueError, match="LOUD"):
        logs.configure("text", "loud")
