"""What one aws-s3 sample costs on a 10,000-object prefix (MinIO on loopback).

A private MinIO gets 10,000 objects (2,000 with --quick), uploaded by 32 threads. Then the
scaler samples the prefix repeatedly with ``maxObjectsToScan: 10000`` (the whole prefix: ten
ListObjectsV2 pages) and with the default 1000 (one page, value capped). Reported per sample:
wall time (p50 and max), LIST requests, and CPU seconds of this process (boto3 parsing the XML)
and of MinIO (answering). The first sample of each scaler (client creation) is not timed.
KEDA has no S3 scaler, so there is no KEDA column.
"""

from __future__ import annotations

import asyncio
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from benchmarks.common import Result, Row, cpu_seconds, ms, percentile, progress

_LOCAL = Path(__file__).resolve().parents[1] / "deploy" / "local"
if str(_LOCAL) not in sys.path:
    sys.path.insert(0, str(_LOCAL))

from localenv.minio import MinioServer  # noqa: E402
from localenv.paths import new_run_dir  # noqa: E402
from scaler.clients import ClientPool  # noqa: E402
from scaler.contract import TriggerContext  # noqa: E402
from scaler.registry import build_scaler  # noqa: E402
from scalers.s3 import S3Scaler  # noqa: E402

NAME = "s3_listing"
BUCKET = "bench-listing"
PREFIX = "jobs/"


def _minio_pid(minio: MinioServer) -> int | None:
    """MinIO's pid for its CPU figure (localenv does not publish it; absent -> no figure)."""
    proc = getattr(getattr(minio, "_proc", None), "proc", None)
    pid = getattr(proc, "pid", None)
    return pid if isinstance(pid, int) else None


def _fill(minio: MinioServer, objects: int) -> float:
    s3: Any = boto3.client(
        "s3",
        endpoint_url=minio.endpoint,
        aws_access_key_id=minio.access_key,
        aws_secret_access_key=minio.secret_key,
        region_name=minio.region,
        config=BotoConfig(s3={"addressing_style": "path"}, max_pool_connections=32),
    )
    s3.create_bucket(Bucket=BUCKET)
    started = time.monotonic()
    done = 0
    with ThreadPoolExecutor(max_workers=32) as pool:
        keys = [f"{PREFIX}{i:06d}.json" for i in range(objects)]
        for _ in pool.map(lambda k: s3.put_object(Bucket=BUCKET, Key=k, Body=b"{}"), keys):
            done += 1
            if done % 2000 == 0:
                progress(NAME, f"uploaded {done}/{objects} objects")
    return time.monotonic() - started


async def _measure(
    minio: MinioServer, max_scan: int | None, reps: int
) -> dict[str, float | int | bool]:
    metadata = {"bucketName": BUCKET, "prefix": PREFIX, "awsEndpoint": minio.endpoint}
    if max_scan is not None:
        metadata["maxObjectsToScan"] = str(max_scan)
    auth = {"awsAccessKeyID": minio.access_key, "awsSecretAccessKey": minio.secret_key}
    trigger = TriggerContext("bench", "s3", 0, "aws-s3", "", metadata, auth_params=auth)
    clients = ClientPool()
    scaler = build_scaler(trigger, clients)
    assert isinstance(scaler, S3Scaler)
    minio_pid = _minio_pid(minio)
    try:
        first = time.monotonic()
        await scaler.sample(time.time())  # creates the shared client (botocore loads models)
        cold = time.monotonic() - first
        walls: list[float] = []
        cpu0 = cpu_seconds()
        minio_cpu0 = cpu_seconds(minio_pid) if minio_pid else 0.0
        value = 0.0
        for _ in range(reps):
            t0 = time.monotonic()
            value = (await scaler.sample(time.time())).value
            walls.append(time.monotonic() - t0)
        cpu = (cpu_seconds() - cpu0) / reps
        minio_cpu = ((cpu_seconds(minio_pid) - minio_cpu0) / reps) if minio_pid else -1.0
        count = scaler.last_count
        assert count is not None
    finally:
        await scaler.aclose()
        await clients.aclose()
    return {
        "value": value,
        "requests": count.requests,
        "truncated": count.truncated,
        "p50_s": percentile(walls, 50),
        "max_s": max(walls),
        "cold_s": cold,
        "cpu_s": cpu,
        "minio_cpu_s": minio_cpu,
        "reps": reps,
    }


def run(out: Path, quick: bool) -> Result:
    objects = 2_000 if quick else 10_000
    reps = 3 if quick else 10
    run_dir = new_run_dir("bench-s3")
    minio = MinioServer(run_dir, name="minio-bench")
    progress(NAME, f"starting MinIO (log: {minio.log})")
    with minio:
        progress(NAME, f"uploading {objects} objects to {BUCKET}/{PREFIX}")
        upload_s = _fill(minio, objects)
        progress(NAME, f"uploaded {objects} objects in {upload_s:.1f} s")
        cases: dict[str, dict[str, float | int | bool]] = {}
        for label, max_scan in ((f"maxObjectsToScan {objects}", objects), ("default 1000", None)):
            progress(NAME, f"sampling with {label}: {reps} samples")
            cases[label] = asyncio.run(_measure(minio, max_scan, reps))
            progress(NAME, f"{label}: {cases[label]}")
    rows: list[Row] = []
    for label, case in cases.items():
        what = f"one sample of {objects} objects, {label}"
        rows.append(Row(f"{what}: wall p50 (max)", f"{ms(case['p50_s'])} ({ms(case['max_s'])})"))
        rows.append(
            Row(
                f"{what}: LIST requests, value",
                f"{case['requests']}, {case['value']:.0f}"
                + (" (capped)" if case["truncated"] else ""),
            )
        )
        minio_cpu = case["minio_cpu_s"]
        rows.append(
            Row(
                f"{what}: CPU Tidal / MinIO",
                f"{ms(case['cpu_s'])} / " + (ms(minio_cpu) if minio_cpu >= 0 else "n/a"),
            )
        )
    raw: dict[str, Any] = {
        "objects": objects,
        "upload_s": upload_s,
        "cases": cases,
        "minio_log": str(minio.log),
    }
    return Result(NAME, rows, raw)
