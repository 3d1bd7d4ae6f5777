"""Session fixtures that start real components on loopback (see deploy/local/localenv)."""

from localenv.pytest_brokers import *  # noqa: F403
from localenv.pytest_kube import *  # noqa: F403


def pytest_configure(config):  # type: ignore[no-untyped-def]
    """Show log records' structured fields (extra=...) in pytest's captured logs."""
    import logging

    from scaler.logs import TextFormatter

    plugin = config.pluginmanager.get_plugin("logging-plugin")
    if plugin is not None:
        for handler in (plugin.caplog_handler, plugin.report_handler):
            handler.setFormatter(TextFormatter())
    logging.getLogger("scaler").setLevel(logging.INFO)
