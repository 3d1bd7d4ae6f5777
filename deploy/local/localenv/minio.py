"""A MinIO S3 server on 127.0.0.1, optionally publishing bucket events to Redis and NATS."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from localenv.nats import NatsServer
from localenv.paths import minio_bin
from localenv.process import ComponentError, ManagedProcess, ProcessComponent, free_port
from localenv.redis import RedisServer

HOST = "127.0.0.1"
EVENTS = "s3-events"  # the Redis list key and the NATS subject bucket events go to
REDIS_QUEUE_ARN = "arn:minio:sqs::PRIMARY:redis"
NATS_QUEUE_ARN = "arn:minio:sqs::PRIMARY:nats"


def _live(endpoint: str) -> bool:
    with urllib.request.urlopen(f"{endpoint}/minio/health/live", timeout=1.0) as resp:
        return int(resp.status) == 200


class MinioServer(ProcessComponent):
    """`minio server` with fixed test credentials; events go to the given Redis / NATS.

    Redis gets `RPUSH s3-events <event json>` (format `access`); NATS gets a message on the
    subject `s3-events`. A bucket publishes only after put_bucket_notification_configuration
    names `redis_queue_arn` / `nats_queue_arn`.
    """

    access_key = "tidal-minio"
    secret_key = "tidal-minio-secret"  # a throwaway credential of a loopback-only test server
    region = "us-east-1"

    def __init__(
        self,
        run_dir: Path,
        *,
        redis: RedisServer | None = None,
        nats: NatsServer | None = None,
        name: str = "minio",
        port: int | None = None,
        console_port: int | None = None,
    ) -> None:
        self.name = name
        self.host = HOST
        self.port = port or free_port()
        self.console_port = console_port or free_port()
        self.data_dir = run_dir / name
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.redis_queue_arn = REDIS_QUEUE_ARN if redis is not None else None
        self.nats_queue_arn = NATS_QUEUE_ARN if nats is not None else None
        env = {
            "MINIO_ROOT_USER": self.access_key,
            "MINIO_ROOT_PASSWORD": self.secret_key,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
        }
        if redis is not None:
            env |= {
                "MINIO_NOTIFY_REDIS_ENABLE_PRIMARY": "on",
                "MINIO_NOTIFY_REDIS_ADDRESS_PRIMARY": redis.address,
                "MINIO_NOTIFY_REDIS_KEY_PRIMARY": EVENTS,
                "MINIO_NOTIFY_REDIS_FORMAT_PRIMARY": "access",
            }
            if redis.password is not None:
                env["MINIO_NOTIFY_REDIS_PASSWORD_PRIMARY"] = redis.password
        if nats is not None:
            env |= {
                "MINIO_NOTIFY_NATS_ENABLE_PRIMARY": "on",
                "MINIO_NOTIFY_NATS_ADDRESS_PRIMARY": f"{nats.host}:{nats.port}",
                "MINIO_NOTIFY_NATS_SUBJECT_PRIMARY": EVENTS,
            }
        argv = [str(minio_bin()), "server", str(self.data_dir)]
        argv += [
            "--address",
            f"{HOST}:{self.port}",
            "--console-address",
            f"{HOST}:{self.console_port}",
        ]
        self._proc = ManagedProcess(
            name, argv, run_dir, ready=lambda: _live(self.endpoint), timeout=60.0, env=env
        )

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.port, self.console_port)

    def _check_start(self) -> None:
        if not minio_bin().exists():
            raise ComponentError(self.name, self.log, f"{minio_bin()} missing (run build.sh)")

    def __repr__(self) -> str:
        return f"MinioServer({self.endpoint})"
