"""The validating admission webhook's HTTP side: AdmissionReview v1 in, AdmissionReview out.

The server knows nothing of what is checked: it hands an `AdmissionRequest` to a `Validator`
(implemented in scaler, like `MetricSource`) and answers its `Verdict`. Paths follow KEDA's
(`/validate-keda-sh-v1alpha1-scaledobject`, ...), so a KEDA webhook configuration needs only
its Service changed. A validator that fails answers allowed with a warning: the webhook never
blocks a cluster on its own bug (`failurePolicy` decides what an unreachable webhook means).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

log = logging.getLogger(__name__)

PATHS = {
    "/validate-keda-sh-v1alpha1-scaledobject": "ScaledObject",
    "/validate-keda-sh-v1alpha1-triggerauthentication": "TriggerAuthentication",
    "/validate-keda-sh-v1alpha1-clustertriggerauthentication": "ClusterTriggerAuthentication",
}
MAX_BODY = 3 * 1024 * 1024  # the apiserver's own request limit for an object is 3 MiB


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    uid: str
    kind: str  # request.kind.kind
    operation: str  # CREATE, UPDATE, DELETE, CONNECT
    namespace: str
    name: str
    object: Mapping[str, Any]
    old_object: Mapping[str, Any] | None
    dry_run: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    message: str = ""
    warnings: tuple[str, ...] = ()


class Validator(Protocol):
    async def review(self, request: AdmissionRequest) -> Verdict:
        """Whether the object may be stored; never raises for a bad object."""
        ...


VALIDATOR_KEY = web.AppKey("validator", Validator)


class BadReview(ValueError):
    """The body is not an AdmissionReview v1 request."""


def parse_review(body: object) -> AdmissionRequest:
    if not isinstance(body, Mapping) or body.get("kind") != "AdmissionReview":
        raise BadReview("not an AdmissionReview")
    req = body.get("request")
    if not isinstance(req, Mapping) or not req.get("uid"):
        raise BadReview("AdmissionReview without a request uid")
    kind = req.get("kind")
    if not isinstance(kind, Mapping):
        kind = {}
    obj = req.get("object")
    old = req.get("oldObject")
    return AdmissionRequest(
        uid=str(req["uid"]),
        kind=str(kind.get("kind", "")),
        operation=str(req.get("operation", "")),
        namespace=str(req.get("namespace") or ""),
        name=str(req.get("name") or ""),
        object=obj if isinstance(obj, Mapping) else {},
        old_object=old if isinstance(old, Mapping) else None,
        dry_run=bool(req.get("dryRun")),
    )


def review_response(uid: str, verdict: Verdict) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": verdict.allowed}
    if not verdict.allowed:
        response["status"] = {"code": 403, "reason": "Forbidden", "message": verdict.message}
    if verdict.warnings:
        response["warnings"] = list(verdict.warnings)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


async def admit(request: web.Request) -> web.Response:
    if (request.content_length or 0) > MAX_BODY:
        return web.Response(status=413, text="request too large")
    try:
        review = parse_review(json.loads(await request.read()))
    except (ValueError, UnicodeDecodeError) as exc:
        return web.Response(status=400, text=f"bad AdmissionReview: {exc}")
    expected = PATHS[request.path]
    if review.kind and review.kind != expected:
        verdict = Verdict(True, warnings=(f"{request.path} reviews {expected}, not {review.kind}",))
    else:
        try:
            verdict = await request.app[VALIDATOR_KEY].review(review)
        except Exception:
            log.exception("admission review failed", extra={"path": request.path})
            verdict = Verdict(True, warnings=("Tidal's admission check failed; see its logs",))
    return web.json_response(review_response(review.uid, verdict))


def add_admission_routes(app: web.Application, validator: Validator) -> None:
    app[VALIDATOR_KEY] = validator
    for path in PATHS:
        app.router.add_post(path, admit)
