"""`tidal check FILE|DIR|- ...`: validate ScaledObject, ScaledJob and
(Cluster)TriggerAuthentication manifests offline, with the checks the admission webhook and the
daemon make."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from scaler.manifest_set import SKIP_MARK, Document, check_documents

SUMMARY = "validate ScaledObject/ScaledJob/TriggerAuthentication manifests offline"

DESCRIPTION = """\
Checks every ScaledObject, ScaledJob, TriggerAuthentication and ClusterTriggerAuthentication in
the given YAML files (multi-document), directories (*.yaml, *.yml, recursively) or standard input
(-), with the same code the admission webhook and the daemon run: KEDA's replica bounds,
fallback and trigger rules, trigger metadata parsed as the daemon parses it, one ScaledObject
per workload, no foreign HPA unless transferred, cpu/memory triggers against the workload's
container requests, and TriggerAuthentication sources Tidal can read. ScaledJobs: KEDA's
scaling and rollout strategies, the Job template, and their triggers' metadata with env read
from the template's containers (docs/scaledjob.md).

The input is one set, standing in for the cluster: two ScaledObjects on one workload, an HPA
manifest, the Deployment, TriggerAuthentication, Secret or LimitRange a ScaledObject relies on
are taken into account when they are in it. What is not in it is not an error.

A document containing the line "# tidal-check: skip" is not checked.
"""

EPILOG = """\
output: one line per problem,
  FILE:DOC_INDEX: KIND NAMESPACE/NAME: FIELD: MESSAGE (hint: HINT)
where DOC_INDEX counts the documents of FILE from 0; a summary goes to stderr.

exit status: 0 no problems, 1 problems found, 2 usage, read or YAML errors.

examples:
  tidal check deploy/                 every manifest under deploy/
  helm template my-app ./chart | tidal check -
  tidal check -o json so.yaml | jq '.[].message'
"""

_SEPARATOR = re.compile(r"^---(?:[ \t].*)?$", re.MULTILINE)


class InputError(Exception):
    """A file that can't be read or parsed (exit status 2)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tidal check",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="FILE|DIR|-", help="what to check; - is stdin")
    p.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default="text",
        help="text: one line per problem (default); json: a list of problem objects",
    )
    p.add_argument(
        "-n",
        "--namespace",
        default="default",
        help="namespace of objects that name none (kubectl's current namespace; default: "
        "%(default)s)",
    )
    return p


def _files(arg: str) -> Iterator[tuple[str, str]]:
    """(name shown, text) of every file `arg` names."""
    if arg == "-":
        yield "-", sys.stdin.read()
        return
    path = Path(arg)
    try:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
            for f in found:
                if f.is_file():
                    yield str(f), f.read_text(encoding="utf-8")
            return
        yield arg, path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{arg}: {exc}") from exc


def documents(source: str, text: str) -> list[Document]:
    """The documents of one YAML stream, numbered from 0; skipped and empty ones are left out
    (a skipped one still takes its number)."""
    docs: list[Document] = []
    index = 0
    for part in _SEPARATOR.split(text):
        try:
            body = yaml.safe_load(part)
        except yaml.YAMLError as exc:
            raise InputError(f"{source}:{index}: not valid YAML: {exc}") from exc
        if body is None:
            continue
        if isinstance(body, dict) and SKIP_MARK not in part:
            docs.append(Document(source, index, body))
        index += 1
    return docs


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # argparse: 0 for --help, 2 for a usage error
        return int(exc.code or 0)
    docs: list[Document] = []
    files = 0
    try:
        for arg in args.paths:
            for source, text in _files(arg):
                files += 1
                docs += documents(source, text)
    except InputError as exc:
        print(f"tidal check: {exc}", file=sys.stderr)
        return 2
    findings, checked = asyncio.run(check_documents(docs, namespace=args.namespace))
    if args.output == "json":
        out: list[dict[str, Any]] = [f.as_json() for f in findings]
        print(json.dumps(out, indent=2))
    else:
        for finding in findings:
            print(finding.line())
    objects = len({(f.source, f.index) for f in findings})
    print(
        f"tidal check: {len(findings)} problem(s) in {objects} of {checked} object(s) "
        f"checked, {files} file(s)",
        file=sys.stderr,
    )
    return 1 if findings else 0
