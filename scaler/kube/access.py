"""SubjectAccessReviews: the metrics API's delegated authorizer, over Tidal's kube client.

Implements `metrics_api.authz.Authorizer` (the metrics API imports nothing from the core, so
the daemon hands it this object). Needs `create` on subjectaccessreviews
(ClusterRole system:auth-delegator). An apiserver error is AuthorizationUnavailable: the request
gets a 5xx, never an allow.
"""

from __future__ import annotations

from metrics_api.authz import Attributes, AuthorizationUnavailable, Decision
from scaler.errors import KubeError
from scaler.kube.client import JSON, KubeClient

SUBJECT_ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


def review_body(a: Attributes) -> JSON:
    spec: JSON = {"user": a.user.name, "groups": list(a.user.groups)}
    if a.user.extra:
        spec["extra"] = {k: list(v) for k, v in a.user.extra}
    if a.is_resource:
        spec["resourceAttributes"] = {
            "verb": a.verb,
            "group": a.group,
            "version": a.version,
            "resource": a.resource,
            "subresource": a.subresource,
            "namespace": a.namespace,
            "name": a.name,
        }
    else:
        spec["nonResourceAttributes"] = {"path": a.path, "verb": a.verb}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


class SubjectAccessReviewer:
    """Asks kube-apiserver, once per call (wrap it in metrics_api.authz.CachingAuthorizer)."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        self.reviews = 0

    async def authorize(self, attributes: Attributes) -> Decision:
        self.reviews += 1
        try:
            body = await self.kube.create(SUBJECT_ACCESS_REVIEWS, review_body(attributes))
        except KubeError as exc:
            raise AuthorizationUnavailable(str(exc)) from exc
        # As k8s.io/apiserver's delegating authorizer: allowed, or else no (denied or no
        # opinion; an evaluationError, e.g. a binding to a missing role, is not a failure).
        status = body.get("status") or {}
        return Decision(bool(status.get("allowed")), str(status.get("reason", "")))
