"""A PostgreSQL server (Debian's `postgresql`) on 127.0.0.1, its cluster in a temp dir.

`initdb` makes a fresh cluster with a superuser `tidal` (password auth over TCP, trust on the
Unix socket, which lives in the temp dir too); `postgres` listens on 127.0.0.1 on a free port
with ``pg_stat_statements`` loaded, so tests count the queries the server really ran
(`calls`); with `tls` it also offers TLS with that serving certificate. PostgreSQL refuses to
run as root: when the tests run as root (CI, the development machines) the server runs as the
`postgres` system user the Debian package creates, the temp
dir given to it; otherwise as the current user.

Admin helpers (`execute`, `value`, `calls`) connect through the Unix socket as the superuser
with psycopg (the `postgresql` extra).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from localenv.certs import ServingCerts
from localenv.process import ComponentError, ManagedProcess, ProcessComponent, free_port

HOST = "127.0.0.1"
SUPERUSER = "tidal"
SUPERUSER_PASSWORD = "tidal-superuser"
SERVICE_USER = "postgres"  # Debian's package creates it; used only when we are root


def bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin (initdb and postgres are not on PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_major)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    return Path(on_path).parent if on_path else Path("/usr/lib/postgresql/bin")


def _major(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


def _drop_privileges() -> list[str]:
    """argv prefix that runs a command as the service user when we are root (else nothing)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={SERVICE_USER}", f"--regid={SERVICE_USER}", "--init-groups"]


class PostgresServer(ProcessComponent):
    """`postgres` on 127.0.0.1:<free port>; data and socket in a private temp dir."""

    def __init__(
        self,
        run_dir: Path,
        *,
        name: str = "postgres",
        port: int | None = None,
        tls: ServingCerts | None = None,
    ) -> None:
        self.name = name
        self.host = HOST
        self.port = port or free_port()
        self.run_dir = run_dir
        self.base = Path(tempfile.mkdtemp(prefix=f"tidal-{name}-"))
        self.data_dir = self.base / "data"
        self.socket_dir = self.base
        argv = [
            *_drop_privileges(),
            str(bin_dir() / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-c", f"listen_addresses={HOST}",
            "-c", f"unix_socket_directories={self.socket_dir}",
            "-c", "shared_preload_libraries=pg_stat_statements",
            "-c", "pg_stat_statements.track=all",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=200",
        ]  # fmt: skip
        self.tls = tls
        if tls is not None:  # TLS offered, not required: sslmode decides
            crt, key = self.base / "server.crt", self.base / "server.key"
            argv += ["-c", "ssl=on", "-c", f"ssl_cert_file={crt}", "-c", f"ssl_key_file={key}"]
        self._proc = ManagedProcess(name, argv, run_dir, ready=self._ready, timeout=60.0)

    # -- lifecycle ------------------------------------------------------------------------------

    def _check_start(self) -> None:
        if not (bin_dir() / "initdb").exists():
            raise ComponentError(
                self.name, self.log, f"{bin_dir()}/initdb missing (run install-system-deps.sh)"
            )

    def _prepare(self) -> None:
        if self.data_dir.exists():
            return  # restarted: keep the cluster
        pwfile = self.base / "pwfile"
        pwfile.write_text(SUPERUSER_PASSWORD + "\n")
        owned: list[Path] = [self.base, pwfile]
        if self.tls is not None:
            owned += self.tls.serving.write(self.base, "server")
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVICE_USER)
            for path in owned:
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.base.chmod(0o700)
        argv = [
            *_drop_privileges(),
            str(bin_dir() / "initdb"),
            "-D", str(self.data_dir),
            "-U", SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "-E", "UTF8",
            "--no-locale",
            "--no-sync",
        ]  # fmt: skip
        with self.log.open("ab") as log:
            done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
        pwfile.unlink()
        if done.returncode != 0:
            raise ComponentError(self.name, self.log, f"initdb exited with {done.returncode}")

    def stop(self) -> None:
        """A fast shutdown (SIGINT: open sessions are ended), not SIGTERM's smart shutdown,
        which waits for every client to leave."""
        proc = self._proc.proc
        if proc is not None and proc.poll() is None:
            for pid in self._children():  # frozen backends must see the postmaster's SIGTERM
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
                os.killpg(proc.pid, signal.SIGCONT)  # a frozen server must see it
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        super().stop()

    def _children(self) -> list[int]:
        """The postmaster's children: each backend calls setsid(), so they are not in the
        process group that ManagedProcess signals."""
        proc = self._proc.proc
        if proc is None:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    status = Path(f"/proc/{entry}/status").read_text()
                    if f"\nPPid:\t{proc.pid}\n" in status:
                        found.append(int(entry))
        return found

    def freeze(self) -> None:
        """SIGSTOP the postmaster and every backend: open connections stop answering too."""
        super().freeze()
        for pid in self._children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        super().thaw()

    def remove(self) -> None:
        """Stop and delete the temp dir (the cluster is gone)."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def _ready(self) -> bool:
        self.value("SELECT 1")
        return True

    # -- admin helpers --------------------------------------------------------------------------

    def _admin(self, dbname: str = "postgres") -> Any:
        import psycopg  # the `postgresql` extra; imported late so localenv imports without it

        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=SUPERUSER,
            dbname=dbname,
            autocommit=True,
            connect_timeout=2,
        )

    def execute(self, *statements: str, dbname: str = "postgres") -> None:
        """Run statements as the superuser (autocommit: CREATE DATABASE works)."""
        with self._admin(dbname) as conn:
            for sql in statements:
                conn.execute(sql)

    def value(self, sql: str, params: Sequence[object] = (), dbname: str = "postgres") -> Any:
        with self._admin(dbname) as conn:
            row = conn.execute(sql, params).fetchone()
            return None if row is None else row[0]

    def create_database(self, name: str) -> None:
        self.execute(f'CREATE DATABASE "{name}"')
        self.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", dbname=name)

    def create_user(self, name: str, password: str, dbname: str) -> None:
        """A login role with `password`, allowed to read every table of `dbname`'s public
        schema."""
        escaped = password.replace("'", "''")
        self.execute(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{escaped}'")
        self.execute(
            f'GRANT CONNECT ON DATABASE "{dbname}" TO "{name}"',
        )
        self.execute(
            f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{name}"',
            f'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO "{name}"',
            dbname=dbname,
        )

    def calls(self, query: str, dbname: str) -> int:
        """How many times the server ran `query` in `dbname` (pg_stat_statements; constants in
        the query are normalized to $n there, so count queries written without constants)."""
        total = self.value(
            "SELECT COALESCE(sum(s.calls), 0) FROM pg_stat_statements s"
            " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s AND s.query = %s",
            (dbname, query),
            dbname=dbname,
        )
        return int(total)

    def reset_calls(self, dbname: str) -> None:
        self.execute("SELECT pg_stat_statements_reset()", dbname=dbname)

    def __repr__(self) -> str:
        return f"PostgresServer({self.host}:{self.port})"
