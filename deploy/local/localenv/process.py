"""One managed child process: start, wait until ready, stop; logs kept in the run directory."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Self


class ComponentError(RuntimeError):
    """A component did not start or become ready; names it and its log file."""

    def __init__(self, name: str, log: Path, reason: str) -> None:
        tail = ""
        with contextlib.suppress(OSError):
            lines = log.read_text(errors="replace").splitlines()[-15:]
            tail = "\n    ".join(lines)
        super().__init__(f"{name} {reason} (log: {log})\n  last log lines:\n    {tail}")
        self.name = name
        self.log = log


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def connections_to(port: int) -> int:
    """ESTABLISHED TCP connections of THIS process whose remote port is `port`, read from the
    kernel's socket tables (not from a client library's own bookkeeping)."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


class ManagedProcess:
    """A child process with a log file and a readiness probe.

    `ready` is called repeatedly until it returns True or `timeout` passes; the process dying
    first, or the timeout, raises ComponentError naming the component and its log.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        *,
        ready: Callable[[], bool],
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log = log_dir / f"{name}.log"
        self.ready = ready
        self.timeout = timeout
        self.env = dict(os.environ, **(env or {}))
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_in: float | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> ManagedProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with self.log.open("ab") as log:
            log.write(f"### {time.strftime('%H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        deadline = t0 + self.timeout
        while True:
            if self.proc.poll() is not None:
                raise ComponentError(self.name, self.log, f"exited with {self.proc.returncode}")
            try:
                if self.ready():
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ComponentError(self.name, self.log, f"not ready after {self.timeout:.0f} s")
            time.sleep(0.1)
        self.started_in = time.monotonic() - t0
        return self

    def stop(self, grace: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
            os.killpg(proc.pid, signal.SIGCONT)  # a frozen process must see the SIGTERM
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def freeze(self) -> None:
        """SIGSTOP the process group: the ports stay open, nothing answers (a hung server)."""
        if self.proc is None or self.proc.poll() is not None:
            raise ComponentError(self.name, self.log, "is not running: cannot freeze it")
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self, wait_ready: bool = True) -> None:
        """SIGCONT after freeze(); with `wait_ready`, return once the readiness probe passes."""
        if self.proc is None or self.proc.poll() is not None:
            raise ComponentError(self.name, self.log, "is not running: cannot thaw it")
        os.killpg(self.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + self.timeout
        while wait_ready:
            try:
                if self.ready():
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise ComponentError(self.name, self.log, "not ready after SIGCONT")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, for tests that need a component to vanish abruptly."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


class ProcessComponent:
    """A component run as one ManagedProcess: the start/stop/freeze/thaw/kill/restart and context
    manager every localenv server shares. Subclasses set `name`, `port` and `_proc`, list extra
    ports in `ports`, check their own prerequisites in `_check_start` and prepare what the
    process needs once its ports are known free in `_prepare`."""

    name: str
    port: int
    _proc: ManagedProcess
    stop_grace = 10.0  # seconds between SIGTERM and SIGKILL

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.port,)

    @property
    def log(self) -> Path:
        return self._proc.log

    @property
    def running(self) -> bool:
        return self._proc.running

    def _check_start(self) -> None:
        """Raise ComponentError when the component cannot start (hook)."""

    def _prepare(self) -> None:
        """Run once the ports are known free, before the process starts (hook)."""

    def start(self) -> Self:
        self._check_start()
        for port in self.ports:
            if tcp_open(port):
                raise ComponentError(self.name, self.log, f"port {port} is already in use")
        t0 = time.monotonic()
        self._prepare()
        self._proc.start()
        print(f"[localenv] {self.name} ready in {time.monotonic() - t0:.1f} s (log: {self.log})")
        return self

    def stop(self) -> None:
        self._proc.stop(grace=self.stop_grace)

    def freeze(self) -> None:
        """SIGSTOP: the ports stay open and nothing answers; thaw() resumes it."""
        self._proc.freeze()

    def thaw(self) -> None:
        """SIGCONT, then wait until the readiness probe passes again."""
        self._proc.thaw()

    def kill(self) -> None:
        """SIGKILL; restart() brings it back on the same ports (with whatever it persisted)."""
        self._proc.kill()

    def restart(self) -> Self:
        self._proc.stop(grace=self.stop_grace)
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
