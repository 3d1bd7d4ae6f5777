"""`make demo`: the local environment, Tidal, and a workload going 0 → 1 → N → 0.

Starts a real control plane and Redis on 127.0.0.1, installs the CRDs, creates a Deployment
`worker` (0 replicas) and a ScaledObject on the Redis list `jobs`, runs `tidal run` with the
metrics API behind the real aggregator, then pushes work and drains it, printing one line per
change of list length or replicas. Ctrl-C stops everything (`--cycles N` stops after N cycles).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from localenv.certs import extension_server_certs
from localenv.controlplane import ControlPlane
from localenv.crds import install_crds
from localenv.paths import k8s_bin, new_run_dir
from localenv.process import ManagedProcess, free_port
from localenv.redis import RedisServer
from localenv.tidal import tidal_process

NS = "demo"
STAGES = 6


def stage(n: int, text: str) -> None:
    print(f"[demo {n}/{STAGES}] {text}", flush=True)


@contextlib.contextmanager
def environment(run_dir: Path) -> Iterator[tuple[ControlPlane, RedisServer, ManagedProcess]]:
    stage(1, f"starting etcd, kube-apiserver, kube-controller-manager (logs: {run_dir}/kube)")
    plane = ControlPlane(run_dir).start()
    redis_server: RedisServer | None = None
    tidal: ManagedProcess | None = None
    registered = False
    try:
        stage(2, "starting Redis")
        redis_server = RedisServer(run_dir).start()
        stage(3, "installing the CRDs, namespace 'demo', Deployment 'worker' at 0 replicas")
        install_crds(plane)
        plane.apply(
            f"/api/v1/namespaces/{NS}",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        )
        plane.apply(
            f"/apis/apps/v1/namespaces/{NS}/deployments/worker",
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "worker", "namespace": NS},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": "worker"}},
                    "template": {
                        "metadata": {"labels": {"app": "worker"}},
                        "spec": {"containers": [{"name": "app", "image": "registry.invalid/w:1"}]},
                    },
                },
            },
        )
        certs = extension_server_certs(["tidal-metrics.tidal-system.svc"])
        cert, key = certs.serving.write(run_dir, "tidal-serving")
        api_port = free_port()
        tidal, health_port = tidal_process(
            run_dir,
            plane.kubeconfig,
            [
                "--leader-elect",
                "false",
                "--api-address",
                f"127.0.0.1:{api_port}",
                "--tls-cert-file",
                cert,
                "--tls-key-file",
                key,
            ],
        )
        stage(
            4,
            f"starting Tidal (log: {run_dir}/tidal.log, metrics: "
            f"http://127.0.0.1:{health_port}/metrics)",
        )
        tidal.start()
        stage(5, "registering the APIService external.metrics.k8s.io → Tidal (ExternalName)")
        plane.register_apiservice(port=api_port, ca_pem=certs.ca.cert_pem)
        registered = True
        yield plane, redis_server, tidal
    finally:
        print("[demo] stopping (APIService first, then Tidal, Redis, control plane)", flush=True)
        if registered:
            with contextlib.suppress(Exception):
                plane.unregister_apiservice()
        if tidal is not None:
            tidal.stop()
        if redis_server is not None:
            redis_server.stop()
        plane.stop()


def scaled_object(redis_address: str) -> dict[str, object]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "worker", "namespace": NS},
        "spec": {
            "scaleTargetRef": {"name": "worker"},
            "pollingInterval": 1,
            "cooldownPeriod": 10,
            "maxReplicaCount": 5,
            "triggers": [
                {
                    "type": "redis",
                    "metadata": {"address": redis_address, "listName": "jobs", "listLength": "5"},
                }
            ],
        },
    }


class Watch:
    """Prints a line whenever the list length or the replica count changes."""

    def __init__(self, plane: ControlPlane, r: redis.Redis) -> None:
        self.plane, self.r = plane, r
        self.t0 = time.monotonic()
        self.last: tuple[int, int] | None = None

    def replicas(self) -> int:
        body = self.plane.request("GET", f"/apis/apps/v1/namespaces/{NS}/deployments/worker")
        return int(body["spec"].get("replicas", 0))

    def tick(self, note: str = "") -> tuple[int, int]:
        now = (int(self.r.llen("jobs")), self.replicas())
        if now != self.last:
            arrow = (
                ""
                if self.last is None or self.last[1] == now[1]
                else (f"   replicas {self.last[1]} → {now[1]}")
            )
            print(
                f"  t={time.monotonic() - self.t0:6.1f}s  list={now[0]:3d}  "
                f"replicas={now[1]}{arrow}  {note}",
                flush=True,
            )
            self.last = now
        return now

    def wait(self, want_replicas: int, timeout: float, note: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.tick(note)[1] == want_replicas:
                return
            time.sleep(0.25)
        print(f"  (replicas did not reach {want_replicas} within {timeout:.0f} s)", flush=True)


def cycle(w: Watch, r: redis.Redis) -> None:
    print("[demo] pushing 25 jobs (listLength 5 per replica → the HPA wants 5)", flush=True)
    r.rpush("jobs", *[f"job-{i}" for i in range(25)])
    w.wait(1, 15, "Tidal activates 0 → 1")
    w.wait(5, 40, "the HPA scales 1 → N from Tidal's external metric")
    print("[demo] draining 2 jobs/s (as workers would)", flush=True)
    while r.llen("jobs") > 0:
        r.lpop("jobs", 2)
        w.tick("draining")
        time.sleep(1)
    w.wait(1, 40, "the HPA scales N → 1")
    w.wait(0, 60, "after cooldownPeriod (10 s) Tidal deactivates 1 → 0")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo")
    parser.add_argument(
        "--cycles", type=int, default=0, help="stop after N cycles (0 = until Ctrl-C)"
    )
    args = parser.parse_args(argv)
    run_dir = new_run_dir("demo")
    print(f"[demo] logs and data of this run: {run_dir}", flush=True)
    try:
        with environment(run_dir) as (plane, redis_server, _):
            stage(6, "creating ScaledObject demo/worker on Redis list 'jobs'")
            plane.apply(
                f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects/worker",
                scaled_object(f"127.0.0.1:{redis_server.port}"),
            )
            kubectl = k8s_bin("kubectl")
            print(
                f"\n  kubeconfig: {plane.kubeconfig}\n  redis:      {redis_server.url}\n"
                f"  look:       {kubectl} --kubeconfig {plane.kubeconfig} "
                f"get so,hpa,deploy -n {NS}\n",
                flush=True,
            )
            r = redis.Redis(port=redis_server.port)
            w = Watch(plane, r)
            w.tick("start")
            done = 0
            while args.cycles == 0 or done < args.cycles:
                cycle(w, r)
                done += 1
                print(f"[demo] cycle {done} complete (0 → 1 → N → 1 → 0)", flush=True)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
