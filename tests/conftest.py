"""Session fixtures that start real components on loopback (see deploy/local/localenv)."""

import logging

import pytest

from localenv.pytest_brokers import *  # noqa: F403
from localenv.pytest_http import *  # noqa: F403
from localenv.pytest_kube import *  # noqa: F403
from localenv.pytest_rabbitmq import *  # noqa: F403
from localenv.pytest_sql import *  # noqa: F403
from localenv.pytest_sqs import *  # noqa: F403
from scaler.logs import TextFormatter


@pytest.fixture(scope="session", autouse=True)
def _structured_log_capture(pytestconfig: pytest.Config) -> None:
    """Show log records' structured fields (extra=...) in pytest's captured logs."""
    plugin = pytestconfig.pluginmanager.get_plugin("logging-plugin")
    if plugin is not None:
        for handler in (plugin.caplog_handler, plugin.report_handler):
            handler.setFormatter(TextFormatter())
    logging.getLogger("scaler").setLevel(logging.INFO)
