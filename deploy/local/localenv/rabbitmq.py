"""A RabbitMQ broker (Debian's `rabbitmq-server`) on 127.0.0.1, everything in a temp dir.

Debian's ``/usr/sbin/rabbitmq-server`` is a wrapper that switches to the ``rabbitmq`` system
user and reads /etc/rabbitmq; the component runs the real script
(``/usr/lib/rabbitmq/bin/rabbitmq-server``) as whoever runs the tests instead, with every path
pointed into its temp dir so nothing of the machine's own broker is read or written:

* ``HOME`` (the Erlang cookie is made there), ``RABBITMQ_MNESIA_BASE``, ``RABBITMQ_LOG_BASE``,
  ``RABBITMQ_CONFIG_FILE`` (a ``rabbitmq.conf``), ``RABBITMQ_ENABLED_PLUGINS_FILE``
  (``[rabbitmq_management].``), an empty ``RABBITMQ_CONF_ENV_FILE`` (so
  /etc/rabbitmq/rabbitmq-env.conf is not sourced) and ``RABBITMQ_ADVANCED_CONFIG_FILE``;
* a node name of its own (``tidal-<amqp port>@localhost``) and its own Erlang port mapper:
  ``epmd -port <free port>`` started and stopped with the broker (``ERL_EPMD_PORT``, the node
  told not to start one), Erlang distribution on one more free port (``RABBITMQ_DIST_PORT``),
  so it never meets another node or a machine-wide epmd;
* AMQP and the management plugin's HTTP API on free ports of 127.0.0.1 only; queue statistics
  every second (``collect_statistics_interval``: rates and counts in the management API follow
  within about a second instead of five).

The broker needs ~5-15 s to boot (the Erlang VM and the management plugin): `start()` prints
progress and session fixtures start it once. Administration goes through the management API as
``guest`` (allowed from loopback): vhosts, users, permissions, queues, publishing.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from localenv.process import ComponentError, ManagedProcess, ProcessComponent, free_port

HOST = "127.0.0.1"
SERVER_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
ADMIN = ("guest", "guest")
STATS_INTERVAL_MS = 1000


def _epmd_binary() -> str:
    return shutil.which("epmd") or "/usr/bin/epmd"


class RabbitMQServer(ProcessComponent):
    """`rabbitmq-server` on 127.0.0.1: AMQP on `port`, the management API on `http_port`."""

    stop_grace = 20.0

    def __init__(self, run_dir: Path, *, name: str = "rabbitmq") -> None:
        self.name = name
        self.host = HOST
        self.port = free_port()
        self.http_port = free_port()
        self.epmd_port = free_port()
        self.dist_port = free_port()
        self.node = f"tidal-{self.port}@localhost"
        self.base = Path(tempfile.mkdtemp(prefix=f"tidal-{name}-"))
        self._run_dir = run_dir
        self._epmd: subprocess.Popen[bytes] | None = None
        self._boot_started = 0.0
        self._boot_reported = 0.0
        env = {
            "HOME": str(self.base),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_USE_LONGNAME": "false",
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(self.base / "rabbitmq.pid"),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-start_epmd false",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": HOST,
        }
        self._proc = ManagedProcess(
            name, [str(SERVER_SCRIPT)], run_dir, ready=self._ready, timeout=120.0, env=env
        )

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.port, self.http_port, self.epmd_port, self.dist_port)

    @property
    def amqp_url(self) -> str:
        """``amqp://host:port`` without credentials or vhost."""
        return f"amqp://{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        """``http://host:port`` of the management API, without credentials."""
        return f"http://{self.host}:{self.http_port}"

    def _check_start(self) -> None:
        if not SERVER_SCRIPT.exists():
            raise ComponentError(
                self.name, self.log, f"{SERVER_SCRIPT} missing (run install-system-deps.sh)"
            )

    def _prepare(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (self.base / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.1 = {HOST}:{self.port}",
                    f"management.tcp.ip = {HOST}",
                    f"management.tcp.port = {self.http_port}",
                    f"collect_statistics_interval = {STATS_INTERVAL_MS}",
                    "log.console = true",
                    "log.console.level = info",
                    "log.file = false",
                    "",
                ]
            )
        )
        epmd_log = (self._run_dir / f"{self.name}-epmd.log").open("ab")
        self._epmd = subprocess.Popen(
            [_epmd_binary(), "-port", str(self.epmd_port), "-address", HOST],
            stdout=epmd_log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        epmd_log.close()
        self._boot_started = self._boot_reported = time.monotonic()
        print(
            f"[localenv] {self.name}: booting Erlang node {self.node} (AMQP {self.port},"
            f" management {self.http_port}); this takes a few seconds",
            flush=True,
        )

    def start(self) -> RabbitMQServer:
        try:
            return super().start()
        except BaseException:
            self._stop_epmd()
            raise

    def stop(self) -> None:
        super().stop()
        self._stop_epmd()

    def kill(self) -> None:
        super().kill()
        self._stop_epmd()

    def restart(self) -> RabbitMQServer:
        """Stop and start again on the same ports and data (epmd too: start() checks its port)."""
        self.stop()
        return self.start()

    def _stop_epmd(self) -> None:
        proc, self._epmd = self._epmd, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def remove(self) -> None:
        """Stop and delete the temp dir."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def _ready(self) -> bool:
        now = time.monotonic()
        if now - self._boot_reported >= 5.0:
            self._boot_reported = now
            print(
                f"[localenv] {self.name}: still booting ({now - self._boot_started:.0f} s)",
                flush=True,
            )
        self.api("GET", "/api/overview", timeout=1.0)
        return True

    # -- admin helpers (the management API as guest) ------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        timeout: float = 10.0,
    ) -> Any:
        """One management API call as guest; the decoded JSON answer (None when empty)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.http_url + path, data=data, method=method)
        token = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def add_vhost(self, vhost: str) -> None:
        self.api("PUT", f"/api/vhosts/{_q(vhost)}", {})
        self.api("PUT", f"/api/permissions/{_q(vhost)}/guest", _ALL)

    def add_user(self, user: str, password: str, *vhosts: str) -> None:
        """A user (tag management: it may read the management API) allowed on `vhosts`."""
        self.api("PUT", f"/api/users/{_q(user)}", {"password": password, "tags": "management"})
        for vhost in vhosts:
            self.api("PUT", f"/api/permissions/{_q(vhost)}/{_q(user)}", _ALL)

    def declare_queue(self, queue: str, vhost: str = "/") -> None:
        self.api("PUT", f"/api/queues/{_q(vhost)}/{_q(queue)}", {"durable": False})

    def purge_queue(self, queue: str, vhost: str = "/") -> None:
        self.api("DELETE", f"/api/queues/{_q(vhost)}/{_q(queue)}/contents")

    def delete_queue(self, queue: str, vhost: str = "/") -> None:
        self.api("DELETE", f"/api/queues/{_q(vhost)}/{_q(queue)}")

    def publish(self, queue: str, count: int = 1, vhost: str = "/") -> None:
        """`count` messages to `queue` through the default exchange (each routed, or an error)."""
        for i in range(count):
            answer = self.api(
                "POST",
                f"/api/exchanges/{_q(vhost)}/amq.default/publish",
                {
                    "properties": {},
                    "routing_key": queue,
                    "payload": f"m{i}",
                    "payload_encoding": "string",
                },
            )
            if not answer.get("routed"):
                raise RuntimeError(f"message to {queue!r} in {vhost!r} was not routed")

    def queue_info(self, queue: str, vhost: str = "/") -> dict[str, Any]:
        info: dict[str, Any] = self.api("GET", f"/api/queues/{_q(vhost)}/{_q(queue)}")
        return info

    def wait_for_messages(
        self, queue: str, messages: int, vhost: str = "/", timeout: float = 30.0
    ) -> None:
        """Until the management API reports `messages` in `queue` (its statistics lag the
        queue by up to `STATS_INTERVAL_MS`)."""
        deadline = time.monotonic() + timeout
        seen: object = None
        while time.monotonic() < deadline:
            try:
                seen = self.queue_info(queue, vhost).get("messages")
            except urllib.error.URLError:
                seen = None
            if seen == messages:
                return
            time.sleep(0.1)
        raise TimeoutError(f"{queue!r} in {vhost!r} shows {seen!r} messages, not {messages}")

    def connections(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api("GET", "/api/connections")
        return found

    def __repr__(self) -> str:
        return f"RabbitMQServer(amqp {self.host}:{self.port}, http {self.http_port})"


_ALL = {"configure": ".*", "write": ".*", "read": ".*"}


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")
