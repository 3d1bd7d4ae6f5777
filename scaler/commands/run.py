"""`tidal run [flags]`: the daemon, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

from scaler import logs
from scaler.commands.run_flags import build_parser, settings_from_args
from scaler.heapfreeze import tune_thresholds
from scaler.service import Service
from scaler.settings import Settings

SUMMARY = "run the daemon (tidal run --help lists every flag)"
log = logging.getLogger("tidal")


async def run_daemon(settings: Settings, *, stop: asyncio.Event) -> None:
    async with Service(settings) as service:
        await service.wait(stop)
    log.info("stopped")


def main(argv: Sequence[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        build_parser().print_help()
        return 0
    settings = settings_from_args(argv)
    logs.configure(settings.log_format, settings.log_level)
    tune_thresholds()

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_daemon(settings, stop=stop)

    asyncio.run(serve())
    return 0
