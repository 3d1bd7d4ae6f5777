"""`tidal check`: files, directories and stdin; one line per problem with file, document index,
object, field and hint; JSON; exit 0 clean, 1 problems, 2 usage or input errors; the set of
manifests stands in for the cluster."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from scaler.commands import check

GOOD = """\
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: worker, namespace: shop}
spec:
  scaleTargetRef: {name: worker}
  triggers:
    - type: redis
      metadata: {address: "redis:6379", listName: jobs, listLength: "5"}
"""

BAD = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers: [{name: app, image: api:1}]
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: api}
spec:
  scaleTargetRef: {name: api}
  minReplicaCount: 0
  triggers:
    - type: cpu
      metricType: Utilization
      metadata: {value: "60"}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: api-too}
spec:
  scaleTargetRef: {name: api}
  triggers:
    - type: redis
      metadata: {address: "redis:6379", listName: jobs, listLength: lots}
"""

SKIPPED = """\
# tidal-check: skip (a KEDA example Tidal does not run)
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: vault}
spec:
  hashiCorpVault: {address: "https://vault:8200"}
"""


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = check.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_clean_file_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run([str(write(tmp_path, "so.yaml", GOOD))], capsys)
    assert (code, out) == (0, "")
    assert "0 problem(s) in 0 of 1 object(s) checked, 1 file(s)" in err


def test_problems_one_line_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "app.yaml", BAD)
    code, out, _ = run([str(path)], capsys)
    assert code == 1
    assert out.splitlines() == [
        f"{path}:1: ScaledObject default/api: spec.minReplicaCount: scaledobject has only "
        "cpu/memory triggers AND minReplica is 0 (scale to zero doesn't work in this case) "
        "(hint: set minReplicaCount to 1 or more, or add a trigger that is not cpu or memory)",
        f"{path}:1: ScaledObject default/api: spec.triggers[0]: the scaledobject has a cpu "
        "trigger but the container app doesn't have the cpu request defined (hint: set "
        "resources.requests.cpu on container app of Deployment api (or a LimitRange default))",
        f"{path}:2: ScaledObject default/api-too: spec.scaleTargetRef: the workload 'api' of "
        "type 'apps/v1.Deployment' is already managed by the ScaledObject 'api' (hint: point "
        "scaleTargetRef at another workload, or delete the other ScaledObject)",
        f"{path}:2: ScaledObject default/api-too: spec.triggers[0].metadata.listLength: error "
        "parsing 'listLength': invalid value 'lots' (expected an integer) (hint: see the redis "
        "trigger's parameters in docs/scalers.md)",
    ]


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "app.yaml", BAD)
    code, out, _ = run(["-o", "json", "--namespace", "prod", str(path)], capsys)
    assert code == 1
    found = json.loads(out)
    assert [(f["document"], f["namespace"], f["name"], f["field"]) for f in found] == [
        (1, "prod", "api", "spec.minReplicaCount"),
        (1, "prod", "api", "spec.triggers[0]"),
        (2, "prod", "api-too", "spec.scaleTargetRef"),
        (2, "prod", "api-too", "spec.triggers[0].metadata.listLength"),
    ]
    assert all(f["file"] == str(path) and f["kind"] == "ScaledObject" for f in found)
    assert found[0]["hint"].startswith("set minReplicaCount")


def test_clean_json_is_an_empty_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--output", "json", str(write(tmp_path, "so.yaml", GOOD))], capsys)
    assert (code, json.loads(out)) == (0, [])


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(BAD))
    code, out, _ = run(["-"], capsys)
    assert code == 1
    assert out.startswith("-:1: ScaledObject default/api: ")


def test_a_directory_is_one_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The Deployment in one file, the objects in others: still one cluster. Files are read in
    name order, so api-too.yaml comes first and keeps the workload."""
    deployment, first, second = BAD.split("---\n")
    write(tmp_path, "a/deployment.yaml", deployment)
    write(tmp_path, "b/api.yml", first)
    write(tmp_path, "b/api-too.yaml", second)
    write(tmp_path, "b/notes.txt", "not yaml: [")
    code, out, err = run([str(tmp_path)], capsys)
    assert code == 1
    assert [line.split(": ")[0] for line in out.splitlines()] == [
        f"{tmp_path}/b/api-too.yaml:0",
        f"{tmp_path}/b/api.yml:0",
        f"{tmp_path}/b/api.yml:0",
        f"{tmp_path}/b/api.yml:0",
    ]
    assert "already managed by the ScaledObject 'api-too'" in out
    assert "3 file(s)" in err


def test_a_skip_mark_skips_one_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "x.yaml", SKIPPED + "---\n" + GOOD)
    code, out, err = run([str(path)], capsys)
    assert (code, out) == (0, "")
    assert "of 1 object(s)" in err
    path.write_text(SKIPPED.replace("# tidal-check: skip", "#"))
    code, out, _ = run([str(path)], capsys)
    assert code == 1
    assert "spec.hashiCorpVault: authentication source 'hashiCorpVault'" in out


@pytest.mark.parametrize(
    ("argv", "text", "message"),
    [
        pytest.param(["missing.yaml"], None, "missing.yaml: [Errno 2]", id="missing-file"),
        pytest.param(["bad.yaml"], "a: [\n", "bad.yaml:0: not valid YAML", id="bad-yaml"),
        pytest.param(["--output", "xml", "so.yaml"], GOOD, "invalid choice: 'xml'", id="bad-flag"),
        pytest.param([], None, "the following arguments are required", id="no-path"),
    ],
)
def test_usage_and_input_errors_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    text: str | None,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    if text is not None:
        write(tmp_path, argv[-1], text)
    code, out, err = run(argv, capsys)
    assert (code, out) == (2, "")
    assert message in err


def test_help_reads_well(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    assert out.startswith("usage: tidal check [-h] [-o {text,json}] [-n NAMESPACE]")
    for words in ("exit status: 0 no problems, 1 problems found, 2 usage", "# tidal-check: skip"):
        assert words in out


def test_the_installed_command(tmp_path: Path) -> None:
    """Through the `tidal` entry point, as a user runs it (stdin, exit status 1)."""
    tidal = Path(sys.executable).with_name("tidal")
    done = subprocess.run(
        [str(tidal), "check", "-o", "json", "-"],
        input=BAD,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert len(json.loads(done.stdout)) == 4
