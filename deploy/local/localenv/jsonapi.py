"""A tiny HTTP JSON API as its own process: the source a `metrics-api` trigger reads.

`python -m localenv.jsonapi --port P --token T --value-file F` serves, on 127.0.0.1:P,

* ``GET /queue`` → ``{"depth": <the number in F>, "idle": 0}`` when the request carries
  ``Authorization: Bearer T``, else 401;
* ``GET /healthz`` → 200 (no auth; the readiness probe).

It is a separate process so a test can stop it or freeze it (SIGSTOP) like any broker. The value
is re-read from the file on every request, so a test changes it by rewriting the file.
"""

from __future__ import annotations

import argparse
import sys
import urllib.request
from pathlib import Path

from localenv.process import ManagedProcess, ProcessComponent, free_port

HOST = "127.0.0.1"


def main(argv: list[str] | None = None) -> int:
    from aiohttp import web

    parser = argparse.ArgumentParser(prog="localenv.jsonapi")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--value-file", type=Path, required=True)
    args = parser.parse_args(argv)
    expected = f"Bearer {args.token}"

    async def queue(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "unauthorized"}, status=401)
        value = float(args.value_file.read_text().strip() or "0")
        return web.json_response({"depth": value, "idle": 0})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/queue", queue)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host=HOST, port=args.port, print=None, access_log=None)
    return 0


def _healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=1.0) as resp:
        return int(resp.status) == 200


class JsonApiServer(ProcessComponent):
    """`python -m localenv.jsonapi` on a free port; `value` sets the number it serves."""

    def __init__(self, run_dir: Path, token: str, *, name: str = "jsonapi", value: float = 0):
        self.name = name
        self.host = HOST
        self.port = free_port()
        self.token = token
        self.value_file = run_dir / name / "value"
        self.value_file.parent.mkdir(parents=True, exist_ok=True)
        self.value = value
        argv = [sys.executable, "-m", "localenv.jsonapi", "--port", str(self.port)]
        argv += ["--token", token, "--value-file", str(self.value_file)]
        src = str(Path(__file__).resolve().parent.parent)  # deploy/local: localenv's parent
        self._proc = ManagedProcess(
            name,
            argv,
            run_dir,
            ready=lambda: _healthy(self.port),
            timeout=30.0,
            env={"PYTHONPATH": src},
        )

    @property
    def value(self) -> float:
        return float(self.value_file.read_text())

    @value.setter
    def value(self, number: float) -> None:
        self.value_file.write_text(f"{number}\n")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def __repr__(self) -> str:
        return f"JsonApiServer({self.url})"


if __name__ == "__main__":
    sys.exit(main())
