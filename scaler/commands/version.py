"""`tidal version`."""

from __future__ import annotations

from collections.abc import Sequence

from scaler import __version__

SUMMARY = "print the version"


def main(argv: Sequence[str]) -> int:
    print(f"tidal {__version__}")
    return 0
