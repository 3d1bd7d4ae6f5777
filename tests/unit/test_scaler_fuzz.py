"""Arbitrary metadata, auth params and env thrown at every registered scaler's parser and
constructor: the only exception allowed is ConfigError (one broken object never crashes Tidal).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaler.clients import ClientPool
from scaler.contract import METRIC_TARGET_TYPES, TriggerContext
from scaler.errors import ConfigError
from scaler.params import Param
from scaler.registry import default_registry, known_types

REGISTRY = default_registry()


def _param_names(trigger_type: str) -> list[str]:
    cls = REGISTRY.load(trigger_type)  # every extra is installed for the tests: no skipping
    params: tuple[Param, ...] = cls.PARAMS
    names = [n for p in params for n in p.names]
    return names + [f"{n}FromEnv" for n in names]


PLAUSIBLE = [
    "",
    " ",
    "0",
    "1",
    "-1",
    "5",
    "1.5",
    "nan",
    "inf",
    "true",
    "false",
    "enable",
    "a:1",
    "127.0.0.1:6379",
    "a:1,b:2",
    "http://127.0.0.1:1/x",
    "https://[::1]:99999/",
    "0 9 * * *",
    "*/5 * * * *",
    "UTC",
    "Europe/Berlin",
    "basic,bearer",
    "tls",
    "apiKey",
    "k=v,x",
    "items.0.value",
    "30s",
    "json",
    "xml",
    "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----",
]


def _maps(names: list[str]) -> st.SearchStrategy[dict[str, str]]:
    keys = st.one_of(st.sampled_from(names), st.text(max_size=12))
    values = st.one_of(st.sampled_from(PLAUSIBLE), st.text(max_size=20))
    return st.dictionaries(keys, values, max_size=8)


@pytest.mark.parametrize("trigger_type", [pytest.param(t, id=t) for t in known_types()])
def test_parsers_raise_only_config_errors(trigger_type: str) -> None:
    names = _param_names(trigger_type)

    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        metadata=_maps(names),
        auth=_maps(names),
        env=st.dictionaries(st.text(max_size=8), st.sampled_from(PLAUSIBLE), max_size=4),
        metric_type=st.sampled_from(METRIC_TARGET_TYPES),
        index=st.integers(min_value=0, max_value=20),
    )
    def check(
        metadata: dict[str, str],
        auth: dict[str, str],
        env: dict[str, str],
        metric_type: str,
        index: int,
    ) -> None:
        trigger = TriggerContext(
            "ns",
            "so",
            index,
            trigger_type,
            "",
            metadata,
            metric_type,
            auth,
            env,  # type: ignore[arg-type]
        )
        problems: tuple[str, ...] = ()
        try:
            prepared = REGISTRY.prepare(trigger)
            scaler = REGISTRY.construct(prepared, ClientPool())
        except ConfigError as exc:
            problems = exc.problems
        if problems:
            assert all(isinstance(p, str) and p for p in problems)
            return
        if callable(getattr(scaler, "prepare", None)):
            return  # its spec is the source's answer (external: GetMetricSpec), not a parse
        spec = scaler.metric_spec()
        assert spec.name
        assert spec.target == spec.target  # not NaN

    check()
