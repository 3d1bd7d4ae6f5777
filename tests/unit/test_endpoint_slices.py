"""Which endpoints of a Service's EndpointSlices are asked (scaler.kube.endpoints)."""

from __future__ import annotations

import pytest

from scaler.kube.endpoints import slice_addresses

V4 = {"addressType": "IPv4", "ports": [{"name": "http", "port": 8080}]}
V6 = {"addressType": "IPv6", "ports": [{"name": "http", "port": 8080}]}


def ep(address: str, uid: str = "", ready: bool | None = True) -> dict[str, object]:
    out: dict[str, object] = {"addresses": [address], "conditions": {"ready": ready}}
    if uid:
        out["targetRef"] = {"kind": "Pod", "uid": uid}
    return out


def test_a_dual_stack_service_counts_each_pod_once() -> None:
    """An IPv4 and an IPv6 slice list the same pods: asking (and summing) both would count
    every pod twice (found in review; KEDA does count them twice)."""
    slices = [
        {**V4, "endpoints": [ep("192.0.2.1", "u-1"), ep("192.0.2.2", "u-2")]},
        {**V6, "endpoints": [ep("2001:db8::1", "u-1"), ep("2001:db8::2", "u-2")]},
    ]
    assert slice_addresses(slices, "http") == ["192.0.2.1:8080", "192.0.2.2:8080"]


@pytest.mark.parametrize(
    ("port", "want"),
    [
        pytest.param("http", ["192.0.2.1:8080"], id="by-name"),
        pytest.param("8080", ["192.0.2.1:8080"], id="by-number"),
        pytest.param("9999", ["192.0.2.1:9999"], id="a-number-the-slice-does-not-name"),
        pytest.param("metrics", [], id="an-unknown-name"),
    ],
)
def test_the_port_is_the_services_by_name_or_number(port: str, want: list[str]) -> None:
    slices = [{**V4, "endpoints": [ep("192.0.2.1")]}]
    assert slice_addresses(slices, port) == want


def test_endpoints_not_ready_are_left_out_and_unknown_readiness_counts() -> None:
    slices = [{**V4, "endpoints": [ep("192.0.2.1", ready=False), ep("192.0.2.2", ready=None)]}]
    assert slice_addresses(slices, "http") == ["192.0.2.2:8080"]
