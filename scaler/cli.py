"""`tidal COMMAND [flags]`: each command is a module of scaler.commands, imported when it runs."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Sequence

import scaler.commands

ORDER = ("run", "check", "simulate", "status", "explain", "version")  # the rest follow by name


def commands() -> list[str]:
    found = {m.name for m in pkgutil.iter_modules(scaler.commands.__path__) if not m.ispkg}
    return [c for c in ORDER if c in found] + sorted(found - set(ORDER))


def usage() -> str:
    lines = ["usage: tidal COMMAND [flags]   (tidal COMMAND --help for its flags)", ""]
    for name in commands():
        summary = getattr(importlib.import_module(f"scaler.commands.{name}"), "SUMMARY", "")
        lines.append(f"  {name:<10} {summary}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    if args[0] not in commands():
        print(f"tidal: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"scaler.commands.{args[0]}")
    code: int = module.main(args[1:])
    return code


if __name__ == "__main__":
    sys.exit(main())
