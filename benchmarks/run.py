"""`make bench`: run every benchmark, write JSON results and the README table.

python -m benchmarks.run [--quick] [name ...]
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

from benchmarks.common import Result, progress

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
SKIP = {"common", "run", "__init__"}


def discover() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(ROOT / "benchmarks")])
        if m.name not in SKIP and not m.name.startswith("_")
    )


def table(results: list[dict[str, object]]) -> str:
    lines = [
        "| benchmark | measurement | Tidal | budget | KEDA 2.20.2 (docs/design.md) |",
        "|---|---|---|---|---|",
    ]
    for res in results:
        for row in res["rows"]:  # type: ignore[attr-defined]
            mark = {True: " ✅", False: " ❌", None: ""}[row["ok"]]
            lines.append(
                f"| {res['name']} | {row['what']} | {row['value']}{mark} | {row['budget']} "
                f"| {row['keda']} |"
            )
    return "\n".join(lines)


def update_readme(results: list[dict[str, object]]) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"README.md lacks the {START} / {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    stamp = time.strftime("%Y-%m-%d")
    note = f"_Last full run: {stamp}; JSON in `benchmarks/results/`._"
    body = f"{START}\n{note}\n\n{table(results)}\n{END}"
    readme.write_text(head + body + tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.run")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: {discover()})")
    args = parser.parse_args(argv)
    names = args.names or discover()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names, 1):
        progress(name, f"starting ({i}/{len(names)})")
        module = importlib.import_module(f"benchmarks.{name}")
        result: Result = module.run(RESULTS, args.quick)
        (RESULTS / f"{name}.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
        progress(name, f"done; results in {RESULTS / (name + '.json')}")
    collected = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    if not args.quick and not args.no_readme:
        update_readme(collected)
    print(table(collected))
    return 0


if __name__ == "__main__":
    sys.exit(main())
