"""A Redis server (Debian's `redis-server`) on 127.0.0.1, no persistence."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from localenv.process import ManagedProcess, ProcessComponent, free_port

HOST = "127.0.0.1"


def _resp(*args: str) -> bytes:
    """One command in RESP array form (safe for arguments with spaces)."""
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        raw = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def ping(port: int, password: str | None = None, host: str = HOST) -> bool:
    """True when the server at host:port answers PING with PONG (after AUTH if needed)."""
    request = (_resp("AUTH", password) if password is not None else b"") + _resp("PING")
    with socket.create_connection((host, port), timeout=1.0) as sock:
        sock.sendall(request)
        data = b""
        while b"PONG" not in data and not data.startswith(b"-"):
            chunk = sock.recv(256)
            if not chunk:
                return False
            data += chunk
    return b"+PONG" in data


class RedisServer(ProcessComponent):
    """`redis-server` bound to 127.0.0.1 on a free port, its working dir in the run dir."""

    def __init__(
        self,
        run_dir: Path,
        *,
        password: str | None = None,
        notify_keyspace_events: str | None = None,
        name: str = "redis",
        port: int | None = None,
    ) -> None:
        self.name = name
        self.host = HOST
        self.port = port or free_port()
        self.password = password
        self.data_dir = run_dir / name
        self.data_dir.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server") or "redis-server"
        argv = [binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly"]
        argv += ["no", "--dir", str(self.data_dir), "--logfile", ""]
        if password is not None:
            argv += ["--requirepass", password]
        if notify_keyspace_events is not None:
            argv += ["--notify-keyspace-events", notify_keyspace_events]
        self._proc = ManagedProcess(
            name, argv, run_dir, ready=lambda: ping(self.port, password), timeout=30.0
        )

    @property
    def url(self) -> str:
        """redis://[:password@]127.0.0.1:port/0 — contains the password: never log it."""
        auth = f":{self.password}@" if self.password is not None else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def safe_url(self) -> str:
        """The URL without the password, for logs and messages."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"RedisServer({self.safe_url})"
