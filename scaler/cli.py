"""`tidal` command line: `tidal run [flags]` starts the daemon; `tidal version`."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from scaler import logs
from scaler.service import VERSION, Service
from scaler.settings import Settings, build_parser, settings_from_args

log = logging.getLogger("tidal")


async def run_daemon(settings: Settings, *, stop: asyncio.Event) -> None:
    async with Service(settings) as service:
        await service.wait(stop)
    log.info("stopped")


def _run(argv: Sequence[str]) -> int:
    settings = settings_from_args(argv)
    logs.configure(settings.log_format, settings.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_daemon(settings, stop=stop)

    asyncio.run(main())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(
            "usage: tidal run [flags]   (tidal run --help lists every flag)\n       tidal version"
        )
        return 0 if args else 2
    if args[0] == "version":
        print(f"tidal {VERSION}")
        return 0
    if args[0] == "run":
        if any(a in ("-h", "--help") for a in args[1:]):
            build_parser().print_help()
            return 0
        return _run(args[1:])
    print(f"tidal: unknown command {args[0]!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
