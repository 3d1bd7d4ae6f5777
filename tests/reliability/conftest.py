"""Fixtures of the fault-injection suite and the results table printed at the end of the run.

`env` (module scope): a namespace, Tidal in-process (poll settings of the suite, metrics API
registered behind kube-apiserver's aggregator) and, lazily, one rig per scaler. The table
(scaler x fault → outcome, recovery) is printed after the run; when every row of the matrix ran
it is also written to tests/reliability/RESULTS.md (README quotes it).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from localenv.certs import extension_server_certs
from localenv.controlplane import ControlPlane
from localenv.crds import install_crds
from localenv.pytest_kube import ApiServiceRegistrar
from scaler.kube.client import KubeClient
from scaler.settings import PollSettings, ServeSettings, WatchSettings
from tests.e2e.harness import running_service
from tests.reliability.harness import (
    CONTROL_PLANE,
    CONTROL_PLANE_TESTS,
    COOLDOWN,
    FAULTS,
    HTTP_TIMEOUT,
    NOT_APPLICABLE,
    POLL,
    PUSH_BACK,
    RECOVERY_POLLS,
    RESULTS,
    SCALERS,
    SLOW,
    Env,
    RowResult,
)

RESULTS_MD = Path(__file__).with_name("RESULTS.md")


@pytest.fixture(scope="module")
def rel_namespace(control_plane: ControlPlane) -> Iterator[str]:
    install_crds(control_plane)
    name = f"rel-{uuid.uuid4().hex[:8]}"
    control_plane.apply(
        f"/api/v1/namespaces/{name}",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    yield name
    control_plane.delete(f"/api/v1/namespaces/{name}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(
    control_plane: ControlPlane,
    run_dir: Path,
    rel_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Env]:
    certs = extension_server_certs(["tidal-metrics.tidal-system.svc"])
    cert, key = certs.serving.write(tmp_path_factory.mktemp("serving"), "tls")
    serve = ServeSettings(
        metrics_address="127.0.0.1:0",
        api_address="127.0.0.1:0",
        tls_cert_file=str(cert),
        tls_key_file=str(key),
    )
    registrar = ApiServiceRegistrar(control_plane)
    kube = await KubeClient.from_kubeconfig(str(control_plane.kubeconfig))
    environment: Env | None = None
    try:
        async with running_service(
            control_plane.kubeconfig,
            watch=WatchSettings(namespace=rel_namespace, cluster_object_namespace="tidal-system"),
            poll=PollSettings(http_timeout=HTTP_TIMEOUT),
            serve=serve,
        ) as service:
            await registrar.register(port=service.api_port, ca_pem=certs.ca.cert_pem)
            environment = Env(control_plane, run_dir, rel_namespace, service, kube, registrar)
            await environment.start_companion()
            try:
                yield environment
            finally:
                await registrar.unregister_all()
    finally:
        if environment is not None:
            await environment.aclose()
            await environment.close_rigs()
        await kube.aclose()


# ----------------------------------------------------------------------------- results table


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if item.name in CONTROL_PLANE_TESTS and report.failed:
        CONTROL_PLANE[item.name] = f"**FAIL** ({item.name}): {_message(report)}"
    row = _row_of(item)
    if row is None:
        return report
    result = RESULTS.setdefault(row, RowResult(*row))
    if report.when == "call" or (report.when == "setup" and report.failed):
        if hasattr(report, "wasxfail"):
            result.outcome = "xfail"
            result.detail = str(report.wasxfail)
        elif report.passed:
            result.outcome = "ok"
        else:
            result.outcome = "FAIL"
            result.detail = _message(report)
    return report


def _message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    message = crash.message if crash is not None else str(report.longrepr)
    return message.splitlines()[0][:200] if message else "failed"


def _row_of(item: pytest.Item) -> tuple[str, str] | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    scaler, fault = callspec.params.get("scaler"), callspec.params.get("fault")
    if scaler in SCALERS and fault in FAULTS:
        return (str(scaler), str(fault))
    return None


def _polls(n: int | None) -> str:
    return f"{n} poll" if n == 1 else f"{n} polls"


def _fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"


def results_table() -> str:
    header = (
        f"Fault-injection suite (tests/reliability): pollingInterval {POLL} s, cooldownPeriod "
        f"{COOLDOWN} s, query timeout {HTTP_TIMEOUT:g} s; *slow* = every chunk the server sends "
        f"held {SLOW:g} s by a proxy; *tls-mismatch* = the server's certificate from a CA the "
        f"trigger does not trust, or (scalers without a CA parameter) the server suddenly "
        f"requiring TLS. Every row has four workloads at 1 replica: *main* (its trigger "
        f"active), *z* (its trigger's source empty, scale-in paused until the fault is on, "
        f"then unpaused: long past its cooldown), *q* and *b* (z's trigger plus a healthy "
        f"idle / busy trigger). *outcome* ok = while the fault lasted no workload lost a "
        f"replica, Ready was False/TriggerError (b: Unknown/PartialTriggerError) and the "
        f"metrics API, read through kube-apiserver's aggregator, answered errors for the "
        f"failing metric (values for healthy ones); after "
        f"it cleared, the main trigger sampled again within {RECOVERY_POLLS} polls (+1 in "
        f"flight), and z and q went 1 → 0 only after sampling their empty source. "
        f"*recovery*: fault cleared → first good sample of main (polls), → main Ready=True, "
        f"→ z and q at 0.\n\n"
    )
    lines = [
        "| scaler | fault | outcome | failed polls | main: Ready during | metrics API during "
        "| recovery | Ready again | z, q → 0 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for scaler in SCALERS:
        for fault in FAULTS:
            na = NOT_APPLICABLE.get((scaler, fault))
            if na is not None:
                lines.append(f"| {scaler} | {fault} | n/a: {na} | | | | | | |")
                continue
            r = RESULTS.get((scaler, fault))
            if r is None:
                continue
            outcome = r.outcome if r.outcome != "FAIL" else f"**FAIL**: {r.detail}"
            if r.outcome == "xfail":
                outcome = f"xfail: {r.detail}"
            recovery = (
                "-" if r.recover_s is None else f"{_fmt(r.recover_s)} ({_polls(r.recover_polls)})"
            )
            lines.append(
                f"| {scaler} | {fault} | {outcome.replace('|', '/')} | {r.failed_polls or '-'} "
                f"| {r.ready or '-'} | {r.api or '-'} | {recovery} | {_fmt(r.ready_again_s)} "
                f"| {_fmt(r.drained_s)} |"
            )
    if CONTROL_PLANE:
        lines.append("\nControl plane and restarts:\n")
        lines += [f"* {CONTROL_PLANE[t]}" for t in CONTROL_PLANE_TESTS if t in CONTROL_PLANE]
    if PUSH_BACK:
        back = [t for t in PUSH_BACK.values() if t is not None]
        lines.append(
            f"\nPush subscriptions (Redis lists, Kafka, NATS client mode) up again after the "
            f"faults: "
            f"{len(back)}/{len(PUSH_BACK)}"
            + (f" (the last {max(back):.1f} s after the last row)" if back else "")
            + "."
        )
    return header + "\n".join(lines) + "\n"


def _complete() -> bool:
    return all(t in CONTROL_PLANE for t in CONTROL_PLANE_TESTS) and all(
        (s, f) in RESULTS and RESULTS[(s, f)].outcome != "not run"
        for s in SCALERS
        for f in FAULTS
        if (s, f) not in NOT_APPLICABLE
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS and not CONTROL_PLANE:
        return
    table = results_table()
    terminalreporter.section("reliability: scaler x fault")
    terminalreporter.write(table)
    if _complete():
        RESULTS_MD.write_text("# Reliability results\n\n" + table)
        terminalreporter.write_line(f"written to {RESULTS_MD}")
    else:
        terminalreporter.write_line(f"partial run: {RESULTS_MD.name} not updated")
