"""Redis Cluster, Redis Sentinel and a TLS-only Redis on 127.0.0.1 (Debian's `redis-server`).

* `RedisCluster(run_dir)`: three masters, no replicas, the 16384 slots split in three ranges
  (CLUSTER ADDSLOTSRANGE, SET-CONFIG-EPOCH, MEET); ready when every node says cluster_state:ok
  and knows all three masters. `cluster-require-full-coverage no`, so when a test kills one
  node the other two keep serving their own slots.
* `RedisSentinel(run_dir)`: one master and one sentinel (`redis-server <conf> --sentinel`)
  monitoring it as `mymaster` with quorum 1; ready when the sentinel reports the master.
* `RedisTLSServer(run_dir)`: one server listening only on a TLS port (`--port 0`), its
  certificate issued for localhost/127.0.0.1 by a fresh CA (`ca_pem` for clients);
  `--tls-auth-clients optional`, so clients need no certificate.

Nothing is persisted (the cluster's nodes.conf aside), every process logs into the run dir.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from localenv.certs import LOOPBACK_IPS, LOOPBACK_NAMES, issue, new_ca
from localenv.process import ComponentError, ManagedProcess, free_port, tcp_open

HOST = "127.0.0.1"
SLOTS = 16384

Reply = str | int | list["Reply"] | None


class RespError(RuntimeError):
    """An error reply (`-ERR ...`) from the server."""


def _encode(args: Sequence[str]) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        raw = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class _Reader:
    """Just enough RESP2 to read one reply of any type from a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = b""

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        self._buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            self._fill()
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self._buf) < n + 2:
            self._fill()
        data, self._buf = self._buf[:n], self._buf[n + 2 :]
        return data

    def reply(self) -> Reply:
        line = self._line()
        kind, rest = line[:1], line[1:].decode(errors="replace")
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RespError(rest)
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._exact(size).decode(errors="replace")
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self.reply() for _ in range(size)]
        raise ConnectionError(f"unexpected RESP reply type {kind!r}")


def command(port: int, *args: str, host: str = HOST, tls: ssl.SSLContext | None = None) -> Reply:
    """Send one command and return its reply (RespError for an error reply)."""
    with socket.create_connection((host, port), timeout=2.0) as raw:
        sock = raw if tls is None else tls.wrap_socket(raw, server_hostname=host)
        sock.sendall(_encode(args))
        return _Reader(sock).reply()


def _binary() -> str:
    return shutil.which("redis-server") or "redis-server"


def _base_argv(port: int, data_dir: Path) -> list[str]:
    argv = [_binary(), "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
    return [*argv, "--dir", str(data_dir), "--logfile", ""]


def _info_field(info: Reply, field: str) -> str | None:
    if not isinstance(info, str):
        return None
    for line in info.splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return value.strip()
    return None


class _Node:
    """One `redis-server` process with its own port and data dir."""

    def __init__(
        self,
        run_dir: Path,
        name: str,
        extra: Sequence[str],
        port: int,
        *,
        listen: int | None = None,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.data_dir = run_dir / name
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = _base_argv(port if listen is None else listen, self.data_dir) + list(extra)
        probe = ready or (lambda: command(port, "PING") == "PONG")
        self.proc = ManagedProcess(name, argv, run_dir, ready=probe, timeout=30.0)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> None:
        if tcp_open(self.port):
            raise ComponentError(self.name, self.proc.log, f"port {self.port} is already in use")
        self.proc.start()


def _wait_until(ready: Callable[[], bool], timeout: float) -> float:
    """Poll `ready` (exceptions count as not yet); seconds it took, or TimeoutError."""
    t0 = time.monotonic()
    while True:
        try:
            if ready():
                return time.monotonic() - t0
        except (OSError, RespError):
            pass
        if time.monotonic() - t0 > timeout:
            raise TimeoutError
        time.sleep(0.1)


class RedisCluster:
    """Three cluster masters on free ports with the slots split between them."""

    def __init__(self, run_dir: Path, *, name: str = "redis-cluster", masters: int = 3) -> None:
        self.name = name
        self.run_dir = run_dir
        self.log = run_dir / f"{name}.log"  # the cluster-forming steps
        self.nodes: list[_Node] = []
        self.bus_ports: list[int] = []
        for n in range(masters):
            port, bus = free_port(), free_port()
            extra = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            extra += ["--cluster-port", str(bus), "--cluster-node-timeout", "5000"]
            extra += ["--cluster-require-full-coverage", "no"]
            self.nodes.append(_Node(run_dir, f"{name}-{n}", extra, port))
            self.bus_ports.append(bus)

    @property
    def addresses(self) -> list[str]:
        return [node.address for node in self.nodes]

    @property
    def address(self) -> str:
        """The comma list KEDA's `addresses` takes."""
        return ",".join(self.addresses)

    def slot_ranges(self) -> list[tuple[int, int]]:
        count = len(self.nodes)
        return [(i * SLOTS // count, (i + 1) * SLOTS // count - 1) for i in range(count)]

    def node_for_slot(self, slot: int) -> int:
        """The index of the node owning `slot` (as assigned at start)."""
        return next(i for i, (lo, hi) in enumerate(self.slot_ranges()) if lo <= slot <= hi)

    def _note(self, text: str) -> None:
        with self.log.open("a") as fh:
            fh.write(text + "\n")

    def _formed(self) -> bool:
        for node in self.nodes:
            info = command(node.port, "CLUSTER", "INFO")
            if _info_field(info, "cluster_state") != "ok":
                return False
            if _info_field(info, "cluster_known_nodes") != str(len(self.nodes)):
                return False
        return True

    def start(self) -> RedisCluster:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            node.start()
        first = self.nodes[0]
        for epoch, (node, (lo, hi)) in enumerate(
            zip(self.nodes, self.slot_ranges(), strict=True), start=1
        ):
            command(node.port, "CLUSTER", "ADDSLOTSRANGE", str(lo), str(hi))
            command(node.port, "CLUSTER", "SET-CONFIG-EPOCH", str(epoch))
            self._note(f"{node.name} ({node.address}): slots {lo}-{hi}, epoch {epoch}")
        for node, bus in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
            command(first.port, "CLUSTER", "MEET", HOST, str(node.port), str(bus))
            self._note(f"{first.name} MEET {node.address} (bus {bus})")
        took = self._wait_formed()
        took += sum(node.proc.started_in or 0.0 for node in self.nodes)
        print(
            f"[localenv] {self.name} ({len(self.nodes)} masters) ready in {took:.1f} s "
            f"(logs: {self.run_dir}/{self.name}-*.log)"
        )
        return self

    def _wait_formed(self) -> float:
        try:
            took = _wait_until(self._formed, 60.0)
        except TimeoutError:
            self.stop()
            raise ComponentError(self.name, self.log, "did not reach cluster_state:ok") from None
        self._note(f"cluster_state:ok on every node after {took:.1f} s")
        return took

    def kill(self, index: int) -> None:
        """SIGKILL one master; its slots have no replica, so they are unserved until restart."""
        self.nodes[index].proc.kill()
        self._note(f"{self.nodes[index].name} killed")

    def restart(self, index: int) -> None:
        """Bring a killed master back on its port; nodes.conf makes it rejoin with its slots
        (and no keys: nothing is persisted)."""
        node = self.nodes[index]
        node.proc.stop()
        node.start()
        self._note(f"{node.name} restarted")
        self._wait_formed()

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.proc.stop()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RedisCluster({self.address})"


class RedisSentinel:
    """One master and one sentinel monitoring it as `master_name` (quorum 1)."""

    def __init__(
        self, run_dir: Path, *, name: str = "redis-sentinel", master_name: str = "mymaster"
    ) -> None:
        self.name = name
        self.master_name = master_name
        self.master = _Node(run_dir, f"{name}-master", [], free_port())
        self.sentinel_port = free_port()
        sentinel_dir = run_dir / f"{name}-sentinel"
        sentinel_dir.mkdir(parents=True, exist_ok=True)
        self.config = sentinel_dir / "sentinel.conf"  # the sentinel rewrites it: must be ours
        self.config.write_text(
            f"port {self.sentinel_port}\n"
            f"bind {HOST}\n"
            f"dir {sentinel_dir}\n"
            'logfile ""\n'
            f"sentinel monitor {master_name} {HOST} {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {master_name} 5000\n"
        )
        self.sentinel = ManagedProcess(
            f"{name}-sentinel",
            [_binary(), str(self.config), "--sentinel"],
            run_dir,
            ready=self._knows_master,
            timeout=30.0,
        )

    def _knows_master(self) -> bool:
        answer = command(
            self.sentinel_port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
        )
        return answer == [HOST, str(self.master.port)]

    @property
    def address(self) -> str:
        """The sentinel's host:port (what a redis-sentinel trigger's `address` names)."""
        return f"{HOST}:{self.sentinel_port}"

    @property
    def master_port(self) -> int:
        return self.master.port

    def start(self) -> RedisSentinel:
        if tcp_open(self.sentinel_port):
            raise ComponentError(
                self.name, self.sentinel.log, f"port {self.sentinel_port} is already in use"
            )
        self.master.start()
        self.sentinel.start()
        took = (self.master.proc.started_in or 0.0) + (self.sentinel.started_in or 0.0)
        print(
            f"[localenv] {self.name} (master {self.master.address}, sentinel {self.address}) "
            f"ready in {took:.1f} s (log: {self.sentinel.log})"
        )
        return self

    def kill_master(self) -> None:
        self.master.proc.kill()

    def restart_master(self) -> None:
        self.master.proc.stop()
        self.master.start()

    def stop(self) -> None:
        self.sentinel.stop()
        self.master.proc.stop()

    def __enter__(self) -> RedisSentinel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RedisSentinel({self.address}/{self.master_name})"


class RedisTLSServer:
    """A Redis server reachable only over TLS; `ca_pem` is the CA clients should trust."""

    def __init__(self, run_dir: Path, *, name: str = "redis-tls") -> None:
        self.name = name
        self.host = HOST
        self.port = free_port()
        cert_dir = run_dir / name / "tls"
        ca = new_ca(f"{name}-ca")
        self.ca_pem = ca.cert_pem.decode()
        ca_crt, _ = ca.write(cert_dir, "ca")
        serving = issue(
            ca, "redis", dns_names=LOOPBACK_NAMES, ip_addresses=LOOPBACK_IPS, server=True
        )
        crt, key = serving.write(cert_dir, "redis")
        self.client_tls = ssl.create_default_context(cadata=self.ca_pem)
        extra = ["--tls-port", str(self.port), "--tls-cert-file", str(crt)]
        extra += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(ca_crt)]
        extra += ["--tls-auth-clients", "optional"]
        self._node = _Node(
            run_dir,
            name,
            extra,
            self.port,
            listen=0,  # --port 0: no plain-text listener
            ready=lambda: command(self.port, "PING", tls=self.client_tls) == "PONG",
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log(self) -> Path:
        return self._node.proc.log

    def start(self) -> RedisTLSServer:
        self._node.start()
        print(
            f"[localenv] {self.name} (TLS {self.address}) ready in "
            f"{self._node.proc.started_in or 0.0:.1f} s (log: {self.log})"
        )
        return self

    def stop(self) -> None:
        self._node.proc.stop()

    def __enter__(self) -> RedisTLSServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RedisTLSServer({self.address})"
