"""The Kubernetes calls the workload actions make, in one place, and the RBAC they need.

Every call goes through the official ``kubernetes`` client (typed APIs for core and apps
objects, ``CustomObjectsApi`` for the KServe and Argo Rollouts CRDs) and comes back as the
object's JSON, or as a :class:`KubeError` that names what was asked, of which object, and
the API server's own message. :data:`RBAC` lists every (API group, resource, verb) a call
here can use: deploy/rollback-namespace/role.yaml grants exactly these, and the tests check
both that the Role equals this table and that no request they see falls outside it.

Writes carry the ``resourceVersion`` the action read (:func:`with_precondition`): the API
server answers 409 Conflict when the object changed in between, and the action reads again
and retries once (:func:`patch_with_retry`), so a rollback never overwrites a change it has
not seen.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from agent.rollback.actions.base import ActionError

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
# A call that takes longer than this is an API server in trouble; the journal says so.
REQUEST_TIMEOUT_S = 10

ARGO = ("argoproj.io", "v1alpha1", "rollouts")
KSERVE = ("serving.kserve.io", "v1beta1", "inferenceservices")

# (API group, resource, verb) of every call below; "" is the core group.
RBAC = frozenset(
    {
        ("", "pods", "get"),  # owner resolution starts at the alert's pod
        ("apps", "replicasets", "get"),  # ReplicaSet -> Deployment or Rollout
        ("apps", "replicasets", "list"),  # the revisions of a Deployment or Rollout
        ("apps", "deployments", "get"),
        ("apps", "deployments", "patch"),
        ("apps", "statefulsets", "get"),
        ("apps", "statefulsets", "patch"),
        ("apps", "controllerrevisions", "list"),  # the revisions of a StatefulSet
        ("argoproj.io", "rollouts", "get"),
        ("argoproj.io", "rollouts", "patch"),  # undo; abort on Argo Rollouts before v0.10
        ("argoproj.io", "rollouts/status", "patch"),  # abort
        ("serving.kserve.io", "inferenceservices", "get"),
        ("serving.kserve.io", "inferenceservices", "list"),  # the spec history
        ("serving.kserve.io", "inferenceservices", "patch"),
    }
)


class KubeError(ActionError):
    """An API call failed; ``status`` is the HTTP status (0 when none came back)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def with_precondition(body: Any, content_type: str, resource_version: str) -> Any:
    """``body`` (exactly what the upstream CLI sends) plus the resourceVersion it was
    computed from: a leading ``replace`` of /metadata/resourceVersion in a JSON patch,
    ``metadata.resourceVersion`` in a merge patch. The API server compares the patched
    object's resourceVersion with the stored one and answers 409 when they differ."""
    if content_type == JSON_PATCH:
        op = {"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version}
        return [op, *body]
    out = copy.deepcopy(body)
    out.setdefault("metadata", {})["resourceVersion"] = resource_version
    return out


def resource_version(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def label_selector(selector: dict[str, Any]) -> str:
    """A LabelSelector object → the string form the LIST call takes."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def controlled_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    """``obj`` names ``owner`` as its controller (metav1.IsControlledBy)."""
    uid = (owner.get("metadata") or {}).get("uid")
    return any(
        ref.get("controller") and ref.get("uid") == uid
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []
    )


class Kube:
    """The calls, on one lazily made ApiClient from ``factory(params)``."""

    def __init__(self, params: dict[str, Any], factory: Callable[[dict[str, Any]], Any]) -> None:
        self.params = params
        self._factory = factory
        self._client: Any = None
        self.calls = 0  # how many requests this instance has sent (bounds owner resolution)

    def _api(self, name: str) -> Any:
        from kubernetes import client

        if self._client is None:
            try:
                self._client = self._factory(self.params)
            except Exception as exc:  # the client raises many types for a bad config
                raise ActionError(f"no Kubernetes client configuration: {exc}") from None
        return getattr(client, name)(self._client)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        self.calls += 1
        try:
            resp = fn(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S, **kw)
            return json.loads(resp.data)
        except ApiException as exc:
            body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else exc.body
            try:
                message = json.loads(body or "{}").get("message") or exc.reason
            except (ValueError, AttributeError):
                message = exc.reason
            raise KubeError(f"{what}: HTTP {exc.status}: {message}", exc.status or 0) from None
        except (HTTPError, OSError, ValueError) as exc:
            raise KubeError(f"{what}: {exc}") from None

    # --- core and apps ---------------------------------------------------------------------

    def pod(self, ns: str, name: str) -> Any:
        api = self._api("CoreV1Api")
        return self._call(f"get pod {ns}/{name}", api.read_namespaced_pod, name, ns)

    def replicaset(self, ns: str, name: str) -> Any:
        api = self._api("AppsV1Api")
        return self._call(f"get replicaset {ns}/{name}", api.read_namespaced_replica_set, name, ns)

    def deployment(self, ns: str, name: str) -> Any:
        api = self._api("AppsV1Api")
        return self._call(f"get deployment {ns}/{name}", api.read_namespaced_deployment, name, ns)

    def replicasets(self, ns: str, selector: str) -> list[dict[str, Any]]:
        api = self._api("AppsV1Api")
        doc = self._call(
            f"list replicasets in {ns}",
            api.list_namespaced_replica_set,
            ns,
            label_selector=selector,
        )
        return list(doc.get("items") or [])

    def statefulset(self, ns: str, name: str) -> Any:
        api = self._api("AppsV1Api")
        return self._call(
            f"get statefulset {ns}/{name}", api.read_namespaced_stateful_set, name, ns
        )

    def patch_statefulset(self, ns: str, name: str, body: Any, content_type: str) -> Any:
        api = self._api("AppsV1Api")
        return self._call(
            f"patch statefulset {ns}/{name}",
            api.patch_namespaced_stateful_set,
            name,
            ns,
            body,
            _content_type=content_type,
        )

    def controllerrevisions(self, ns: str, selector: str) -> list[dict[str, Any]]:
        api = self._api("AppsV1Api")
        doc = self._call(
            f"list controllerrevisions in {ns}",
            api.list_namespaced_controller_revision,
            ns,
            label_selector=selector,
        )
        return list(doc.get("items") or [])

    # --- custom resources ------------------------------------------------------------------

    def custom(self, crd: tuple[str, str, str], ns: str, name: str) -> Any:
        api = self._api("CustomObjectsApi")
        return self._call(
            f"get {crd[2]} {ns}/{name}",
            api.get_namespaced_custom_object,
            *crd[:2],
            ns,
            crd[2],
            name,
        )

    def customs(self, crd: tuple[str, str, str], ns: str, selector: str) -> list[dict[str, Any]]:
        api = self._api("CustomObjectsApi")
        doc = self._call(
            f"list {crd[2]} in {ns}",
            api.list_namespaced_custom_object,
            *crd[:2],
            ns,
            crd[2],
            label_selector=selector,
        )
        return list(doc.get("items") or [])

    def patch_custom(
        self,
        crd: tuple[str, str, str],
        ns: str,
        name: str,
        body: Any,
        content_type: str,
        *,
        status: bool = False,
    ) -> Any:
        api = self._api("CustomObjectsApi")
        fn = (
            api.patch_namespaced_custom_object_status
            if status
            else api.patch_namespaced_custom_object
        )
        where = f"{crd[2]}{'/status' if status else ''} {ns}/{name}"
        return self._call(
            f"patch {where}", fn, *crd[:2], ns, crd[2], name, body, _content_type=content_type
        )


CONFLICT = 409


def patch_with_retry(
    read: Callable[[], dict[str, Any]],
    send: Callable[[dict[str, Any]], Any],
    what: str,
) -> Any:
    """``send(obj)`` patches what it computed from ``obj`` (with its resourceVersion); on
    409 Conflict the object is read again and sent once more, and a second conflict is an
    error that says the object keeps changing. Returns what the last send returned."""
    obj = read()
    try:
        return send(obj)
    except KubeError as exc:
        if exc.status != CONFLICT:
            raise
    obj = read()
    try:
        return send(obj)
    except KubeError as exc:
        if exc.status != CONFLICT:
            raise
        raise ActionError(
            f"{what} changed between read and patch twice (HTTP 409 Conflict both times); "
            "someone else is changing it: nothing was patched"
        ) from None


def opt_in_refusal(obj: dict[str, Any], kind: str) -> str:
    """Why ``obj`` may not be rolled back by its owners' choice ("" when it may): the label
    must be on the object that is patched, where only those who may change it can put it."""
    from agent.rollback.actions.kubernetes import OPT_IN_LABEL, OPT_IN_VALUE

    meta = obj.get("metadata") or {}
    if (meta.get("labels") or {}).get(OPT_IN_LABEL) == OPT_IN_VALUE:
        return ""
    ns, name = meta.get("namespace", "?"), meta.get("name", "?")
    return (
        f"{kind} {ns}/{name} has not opted in to rollbacks: it lacks the label "
        f'{OPT_IN_LABEL}: "{OPT_IN_VALUE}" (kubectl label {kind.lower()} {name} -n {ns} '
        f"{OPT_IN_LABEL}={OPT_IN_VALUE})"
    )
