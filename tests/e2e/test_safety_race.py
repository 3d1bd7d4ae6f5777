"""A concurrent writer racing deactivation never loses its write (safety rules 3 and 4).

Tidal decides 1 -> 0 from the count it read; if the HPA or a person raises the count before the
write lands, the write must not apply (it is conditional on the resourceVersion the decision was
made from) and the next poll decides again from the new count.

The race is made deterministic with the trigger's own source: a metrics-api endpoint served by
the test holds the poll's sample until the concurrent writer has written (a real HTTP source;
only the moment it answers is chosen by the test). Every held request sits between Tidal reading
the count and writing /scale, so each round is one race; 20 objects x 10 rounds = 200 races.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from localenv.process import free_port
from scaler.kube.client import JSON
from scaler.kube.paths import namespaced
from scaler.kube.watch import EventType, Watcher
from tests.e2e.harness import Cluster, deployment, eventually, running_daemon, scaled_object

OBJECTS = 20
ROUNDS = 10


@dataclass
class _Gate:
    armed: bool = False
    held: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class GatedSource:
    """Answers {"value": 0} (inactive) for /o<i>; an armed gate holds the next request."""

    gates: dict[str, _Gate] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        gate = self.gates.setdefault(request.match_info["name"], _Gate())
        if gate.armed:
            gate.armed = False
            gate.held.set()
            await gate.release.wait()
        return web.json_response({"value": 0})

    def arm(self, name: str) -> _Gate:
        gate = self.gates[name] = _Gate(armed=True)
        return gate


@contextlib.asynccontextmanager
async def _serve(source: GatedSource) -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_get("/{name}", source.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield port
    finally:
        for gate in source.gates.values():
            gate.release.set()
        await runner.cleanup()


class Transitions:
    """Every change of spec.replicas seen on the Deployments of the namespace."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.seen: list[tuple[str, int, int]] = []

    async def handle(self, kind: EventType, obj: JSON) -> None:
        name = obj["metadata"]["name"]
        replicas = int(obj.get("spec", {}).get("replicas", 0))
        before = self.last.get(name)
        if before is not None and before != replicas:
            self.seen.append((name, before, replicas))
        self.last[name] = replicas


async def _scale(cluster: Cluster, name: str, replicas: int) -> None:
    path = namespaced("apps", "v1", "deployments", cluster.ns, name) + "/scale"
    await cluster.kube.merge_patch(path, {"spec": {"replicas": replicas}})


async def test_concurrent_writer_racing_deactivation_never_sees_n_to_zero(
    cluster: Cluster, kubeconfig: Path
) -> None:
    source = GatedSource()
    transitions = Transitions()
    watcher = Watcher(
        cluster.kube,
        namespaced("apps", "v1", "deployments", cluster.ns),
        transitions.handle,
        name="test-deployments",
    )
    async with _serve(source) as port, running_daemon(kubeconfig) as daemon:
        watch_task = asyncio.create_task(watcher.run())
        names = [f"o{i}" for i in range(OBJECTS)]
        for name in names:
            source.gates[name] = _Gate()
            await cluster.create_deployment(deployment(name, replicas=0))
            await cluster.create_so(
                scaled_object(
                    name,
                    name,
                    [
                        {
                            "type": "metrics-api",
                            "metadata": {
                                "url": f"http://127.0.0.1:{port}/{name}",
                                "valueLocation": "value",
                                "targetValue": "1",
                            },
                        }
                    ],
                    pollingInterval=1,
                    cooldownPeriod=0,
                    maxReplicaCount=10,
                )
            )

        async def cache(name: str) -> int | None:
            rt = daemon.objects.get((cluster.ns, name))
            if rt is None or rt.target is None:
                return None
            state = await daemon.targets.state(rt.target, cluster.ns, name)
            return None if state is None else state.replicas

        async def races(name: str) -> None:
            for _ in range(ROUNDS):
                await eventually(lambda: cache(name), lambda n: n == 0, what=f"{name} at 0")
                await eventually(lambda: cluster.replicas(name), lambda n: n == 0)
                gate = source.arm(name)
                await _scale(cluster, name, 1)  # someone activates; the trigger is inactive
                async with asyncio.timeout(30):
                    await gate.held.wait()  # Tidal read 1 and is sampling before it decides
                await _scale(cluster, name, 5)  # the HPA (or a person) scales out meanwhile
                gate.release.set()
                await asyncio.sleep(0.3)  # Tidal's write, if it were to make one, lands now
                await _scale(cluster, name, 1)  # back to 1: Tidal may now deactivate

        try:
            await asyncio.gather(*(races(name) for name in names))
            for name in names:  # the last round's legitimate 1 -> 0
                await eventually(lambda: cluster.replicas(name), lambda n: n == 0)  # noqa: B023
        finally:
            watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch_task
        to_zero_from_n = [t for t in transitions.seen if t[1] > 1 and t[2] == 0]
        print(
            f"\n{OBJECTS * ROUNDS} races: {len(transitions.seen)} replica changes, "
            f"{len(to_zero_from_n)} N->0 writes: {to_zero_from_n[:5]}"
        )
        assert to_zero_from_n == []
        assert sum(1 for t in transitions.seen if t == (t[0], 1, 0)) >= OBJECTS * ROUNDS
