"""`tidal` subcommands: one module each, found by name (scaler/cli.py lists this package).

A command module defines `SUMMARY` (one line for `tidal --help`) and `main(argv) -> int`
(argv without the command's own name; it parses its flags, `--help` included). Modules are
imported only when their command runs, so `tidal version` imports nothing heavy.
"""
