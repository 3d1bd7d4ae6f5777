"""A MySQL-protocol server (Debian's `mariadb-server`) on 127.0.0.1, its data in a temp dir.

`mariadb-install-db` makes fresh system tables (root with password auth and an empty password,
no test database); `mariadbd` listens on 127.0.0.1 on a free port, its Unix socket in the temp
dir, with the general query log written to the ``mysql.general_log`` table so tests count the
queries the server really ran (`calls`); with `tls` it also offers TLS with that serving
certificate. No option file is read (``--no-defaults``): the
machine's /etc/mysql settings do not leak in. As root (CI, the development machines) the
server runs with ``--user=root``, which mariadbd requires to be said explicitly.

Admin helpers (`execute`, `value`, `calls`) connect through the Unix socket as root with
PyMySQL (installed with the `mysql` extra).
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from localenv.certs import ServingCerts
from localenv.process import ComponentError, ManagedProcess, ProcessComponent, free_port

HOST = "127.0.0.1"


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or next(
            (p for d in ("/usr/sbin", "/usr/bin") if os.path.exists(p := f"{d}/{name}")), None
        )
        if found:
            return found
    return names[0]


class MysqlServer(ProcessComponent):
    """`mariadbd` on 127.0.0.1:<free port>; data, socket and pid file in a private temp dir."""

    def __init__(
        self,
        run_dir: Path,
        *,
        name: str = "mysql",
        port: int | None = None,
        tls: ServingCerts | None = None,
    ) -> None:
        self.name = name
        self.host = HOST
        self.port = port or free_port()
        self.base = Path(tempfile.mkdtemp(prefix=f"tidal-{name}-"))
        self.data_dir = self.base / "data"
        self.socket = self.base / "mysqld.sock"
        self._user = getpass.getuser()
        argv = [
            _binary("mariadbd", "mysqld"),
            "--no-defaults",
            f"--datadir={self.data_dir}",
            f"--port={self.port}",
            f"--bind-address={HOST}",
            f"--socket={self.socket}",
            f"--pid-file={self.base / 'mysqld.pid'}",
            f"--user={self._user}",
            "--skip-name-resolve",
            "--general-log=1",
            "--log-output=TABLE",
            "--innodb-flush-log-at-trx-commit=0",
            "--skip-log-bin",
            "--max-connections=300",
        ]
        self.tls = tls
        if tls is not None:  # TLS offered, not required
            base = self.base
            argv += [f"--ssl-cert={base / 'server.crt'}", f"--ssl-key={base / 'server.key'}"]
        self._proc = ManagedProcess(name, argv, run_dir, ready=self._ready, timeout=60.0)

    def _check_start(self) -> None:
        if not shutil.which("mariadb-install-db") and not os.path.exists(
            "/usr/bin/mariadb-install-db"
        ):
            raise ComponentError(
                self.name, self.log, "mariadb-install-db missing (run install-system-deps.sh)"
            )

    def _prepare(self) -> None:
        if self.tls is not None:
            self.tls.serving.write(self.base, "server")
        if self.data_dir.exists():
            return  # restarted: keep the data
        argv = [
            _binary("mariadb-install-db"),
            "--no-defaults",
            f"--datadir={self.data_dir}",
            f"--user={self._user}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
        with self.log.open("ab") as log:
            done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            raise ComponentError(
                self.name, self.log, f"mariadb-install-db exited with {done.returncode}"
            )

    def remove(self) -> None:
        """Stop and delete the temp dir (the data is gone)."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def _ready(self) -> bool:
        self.value("SELECT 1")
        return True

    # -- admin helpers --------------------------------------------------------------------------

    def _admin(self, database: str | None = None) -> Any:
        import pymysql  # a dependency of aiomysql (the `mysql` extra); imported late

        return pymysql.connect(
            unix_socket=str(self.socket),
            user="root",
            password="",
            database=database,
            autocommit=True,
            connect_timeout=2,
        )

    def execute(self, *statements: str, database: str | None = None) -> None:
        conn = self._admin(database)
        try:
            with conn.cursor() as cursor:
                for sql in statements:
                    cursor.execute(sql)
        finally:
            conn.close()

    def value(self, sql: str, params: Sequence[object] = (), database: str | None = None) -> Any:
        conn = self._admin(database)
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, tuple(params) or None)
                row = cursor.fetchone()
                return None if row is None else row[0]
        finally:
            conn.close()

    def create_database(self, name: str) -> None:
        self.execute(f"CREATE DATABASE `{name}`")

    def create_user(self, name: str, password: str, database: str) -> None:
        """A user that may log in from 127.0.0.1 with `password` and read `database`."""
        escaped = password.replace("\\", "\\\\").replace("'", "\\'")
        self.execute(
            f"CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY '{escaped}'",
            f"GRANT SELECT ON `{database}`.* TO '{name}'@'127.0.0.1'",
        )

    def calls(self, query: str) -> int:
        """How many times the server was sent `query` (the general log table)."""
        return int(
            self.value(
                "SELECT COUNT(*) FROM mysql.general_log"
                " WHERE command_type = 'Query' AND CONVERT(argument USING utf8mb4) = %s",
                (query,),
            )
        )

    def reset_calls(self) -> None:
        self.execute("TRUNCATE TABLE mysql.general_log")

    def __repr__(self) -> str:
        return f"MysqlServer({self.host}:{self.port})"
