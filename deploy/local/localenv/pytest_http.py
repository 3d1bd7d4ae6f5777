"""Pytest fixtures for HTTP scale-from-zero (star-imported by tests/conftest.py).

* `kwok` (session): kwok on the session's control plane; pods pinned to `kwok.node` turn Ready
  with a loopback pod IP (see localenv.kwok).
* `pod_backends` (function): real HTTP servers bound to EVERY address kwok may give a pod, on
  one free port, so whichever IP a pod gets, a server answers there for it. Each answer names the
  address that answered and echoes ``X-Request-Id``; `seen` counts the ids served.
* `interceptors` (function): starts `tidal intercept` processes (the real command) watching the
  test's namespace with the Pods backend source; stops them at teardown.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
from aiohttp import web

from localenv.controlplane import ControlPlane
from localenv.kwok import Kwok, pod_addresses
from localenv.paths import REPO
from localenv.process import ManagedProcess, free_port

__all__ = [
    "InterceptorFactory",
    "InterceptorProcess",
    "PodBackends",
    "interceptors",
    "kwok",
    "pod_backends",
]


@pytest.fixture(scope="session")
def kwok(control_plane: ControlPlane) -> Iterator[Kwok]:
    fake = Kwok(control_plane).start()
    try:
        yield fake
    finally:
        fake.stop()


class PodBackends:
    """One aiohttp app on every pod address at `port`; `delay` slows each answer."""

    def __init__(self, addresses: Sequence[str], port: int, name: str = "backend") -> None:
        self.addresses = list(addresses)
        self.port = port
        self.name = name
        self.seen: collections.Counter[str] = collections.Counter()
        self.by_address: collections.Counter[str] = collections.Counter()
        self.arrived: dict[str, float] = {}  # request id -> perf_counter() at its arrival
        self.delay = 0.0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                await ws.send_str(f"{self.name}:{msg.data}")
            return ws
        if request.path.startswith("/big/"):  # /big/<n>: n bytes, chunked (no Content-Length)
            big = web.StreamResponse()
            await big.prepare(request)
            left = int(request.path.rsplit("/", 1)[1])
            while left > 0:
                await big.write(b"x" * min(left, 65536))
                left -= 65536
            await big.write_eof()
            return big
        local = request.transport.get_extra_info("sockname")[0] if request.transport else ""
        rid = request.headers.get("X-Request-Id", "")
        self.arrived.setdefault(rid, time.perf_counter())
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        self.seen[rid] += 1
        self.by_address[local] += 1
        answer = {"backend": self.name, "address": local, "id": rid, "bytes": len(body)}
        return web.json_response(answer)

    async def start(self) -> PodBackends:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        for address in self.addresses:
            await web.TCPSite(self._runner, address, self.port, backlog=1024).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def pod_backends(kwok: Kwok) -> AsyncIterator[PodBackends]:
    backends = await PodBackends(pod_addresses(kwok.cidr), free_port()).start()
    try:
        yield backends
    finally:
        await backends.stop()


class InterceptorProcess:
    """One `tidal intercept` process on 127.0.0.1 (proxy and admin ports)."""

    def __init__(
        self, kubeconfig: Path, namespace: str, log_dir: Path, index: int, ports: tuple[int, int]
    ) -> None:
        self.proxy_port, self.admin_port = ports
        argv = [
            sys.executable,
            "-m",
            "scaler.cli",
            "intercept",
            f"--kubeconfig={kubeconfig}",
            f"--namespace={namespace}",
            f"--listen=127.0.0.1:{self.proxy_port}",
            f"--admin=127.0.0.1:{self.admin_port}",
            "--backends=pods",
            "--log-format=text",
            f"--replica=interceptor-{index}",
        ]
        self.process = ManagedProcess(
            f"interceptor-{namespace}-{index}",
            argv,
            log_dir,
            ready=self._ready,
            timeout=60,
            cwd=REPO,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def admin(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"http://{self.admin}/readyz", timeout=2) as resp:
            return bool(resp.status == 200)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.admin}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def readyz(self) -> int:
        """The admin port's /readyz status (503 while draining)."""
        try:
            with urllib.request.urlopen(f"http://{self.admin}/readyz", timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def start(self) -> InterceptorProcess:
        self.process.start()
        return self

    def terminate(self) -> None:
        """SIGTERM, as Kubernetes does in a rolling restart: the process drains, then exits."""
        proc = self.process.proc
        assert proc is not None, "not running"
        proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float = 120.0) -> int:
        proc = self.process.proc
        assert proc is not None, "not running"
        return proc.wait(timeout)

    def stop(self) -> None:
        self.process.stop(grace=60)


class InterceptorFactory:
    def __init__(self, kubeconfig: Path, namespace: str, log_dir: Path) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log_dir = log_dir
        self.started: list[InterceptorProcess] = []

    async def start(self, ports: tuple[int, int] | None = None) -> InterceptorProcess:
        """A new interceptor (on `ports` when given: a second process shares them with
        SO_REUSEPORT, as a rolling restart does); returns once it is ready."""
        proc = InterceptorProcess(
            self.kubeconfig,
            self.namespace,
            self.log_dir,
            len(self.started),
            ports or (free_port(), free_port()),
        )
        self.started.append(proc)
        await asyncio.to_thread(proc.start)
        return proc

    async def stop_all(self) -> None:
        for proc in self.started:
            await asyncio.to_thread(proc.stop)


@pytest.fixture
async def interceptors(
    control_plane: ControlPlane, namespace: str, run_dir: Path
) -> AsyncIterator[InterceptorFactory]:
    factory = InterceptorFactory(control_plane.kubeconfig, namespace, run_dir / "interceptors")
    try:
        yield factory
    finally:
        await factory.stop_all()
