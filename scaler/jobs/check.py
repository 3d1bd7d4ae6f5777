"""`tidal check` and the admission checks of one ScaledJob manifest: the ScaledJob parser
(scaler.jobs.spec) and every trigger's metadata parsed as the controller's build parses it
(scaler.trigger_check), env read from the Job template's own containers. Pure but for what
`known` holds; never reaches a cluster."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scaler.jobs.spec import read_scaled_job
from scaler.trigger_check import UNKNOWN_ENV, container_env
from scaler.validation import NOTHING_KNOWN, Known, Problem, trigger_problems


async def check_scaled_job(raw: Mapping[str, Any], known: Known = NOTHING_KNOWN) -> list[Problem]:
    """Every problem of one ScaledJob manifest (empty: the controller would run it)."""
    sj, parsed = read_scaled_job(raw)
    problems = [Problem(p.path, p.message) for p in parsed]
    so = sj.as_scaled_object()
    env: Mapping[str, str] = UNKNOWN_ENV
    pod = sj.pod_spec
    containers = pod.get("containers") if pod is not None else None
    if isinstance(containers, Sequence) and containers and _needs_env(raw):
        env, located = await container_env(so, list(containers), known.data)
        problems += [Problem(path, message) for path, message in located]
    problems += await trigger_problems(so, env, known)
    return problems


def _needs_env(raw: Mapping[str, Any]) -> bool:
    spec = raw.get("spec")
    triggers = spec.get("triggers") if isinstance(spec, Mapping) else None
    for trig in triggers if isinstance(triggers, list) else ():
        if not isinstance(trig, Mapping):
            continue
        metadata = trig.get("metadata")
        keys = metadata.keys() if isinstance(metadata, Mapping) else ()
        if trig.get("authenticationRef") or any(str(k).endswith("FromEnv") for k in keys):
            return True
    return False
