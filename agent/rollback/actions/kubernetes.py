"""Kubernetes Deployment: what ``kubectl rollout undo deployment/NAME`` does.

Through the official ``kubernetes`` client, three calls: GET the Deployment, LIST its
ReplicaSets by the Deployment's selector (keeping those it controls), PATCH the
Deployment. As kubectl does:

- a paused Deployment is refused (the rollout would not progress; resume it first);
- the target is the ReplicaSet with the highest ``deployment.kubernetes.io/revision``
  below the Deployment's own revision;
- when its pod template already equals the Deployment's (``pod-template-hash`` aside),
  nothing is patched ("skipped rollback");
- the template is patched back without ``pod-template-hash``, and the Deployment's
  annotations become the ReplicaSet's (kubectl's bookkeeping annotations kept), in one
  JSON patch.

Unlike kubectl, the patch also carries the ``resourceVersion`` of the Deployment it was
computed from (a leading ``replace`` of /metadata/resourceVersion,
kube_api.with_precondition): the patch replaces the template and the annotations whole,
so one computed from a stale read would silently undo a rollout or an annotation written
in between. On 409 Conflict the Deployment and its ReplicaSets are read again, the
decision made again (the change may have made the rollback moot) and the patch sent once
more; a second 409 fails with the reason, nothing patched (kube_api.patch_with_retry).

It acts only where it was told it may: the namespace must be in the target's
``allowed_namespaces`` as the running configuration has them (handed in by the controller,
never read from the journal row, which an older configuration wrote) and the Deployment
must carry the label
``vigil.dev/rollback: "enabled"`` (its owners' opt-in); otherwise the rollback is
``refused`` with the reason, and nothing is patched. Needs RBAC ``get,patch`` on
deployments and ``list`` on replicasets in each allowed namespace (deploy/rollback-namespace/).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from agent.rollback.actions.base import (
    DRY_RUN,
    SKIPPED,
    SUCCEEDED,
    ActionError,
    Outcome,
    Refused,
)
from agent.rollback.actions.kube_api import (
    JSON_PATCH,
    REQUEST_TIMEOUT_S,
    KubeError,
    label_selector,
    patch_with_retry,
    resource_version,
    with_precondition,
)
from agent.rollback.policy import namespace_refusal

# The Deployment's opt-in: set by the people who own the workload, not by whoever writes
# alert rules, so that a rule (or a PrometheusRule anyone can create) cannot reach it.
OPT_IN_LABEL, OPT_IN_VALUE = "vigil.dev/rollback", "enabled"
REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
# kubectl's rollback.go: annotations that belong to the Deployment, not to a revision.
SKIP_ANNOTATIONS = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)


def revision(obj: dict[str, Any]) -> int:
    text = (obj.get("metadata", {}).get("annotations") or {}).get(REVISION, "")
    try:
        return int(text)
    except ValueError:
        return 0


def without_hash(template: dict[str, Any]) -> dict[str, Any]:
    t = copy.deepcopy(template)
    labels = t.get("metadata", {}).get("labels")
    if labels:
        labels.pop(HASH_LABEL, None)
    return t


def previous_replicaset(
    deployment: dict[str, Any], replicasets: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The ReplicaSet of the highest revision below the Deployment's, or None."""
    uid = deployment["metadata"].get("uid")
    current = revision(deployment)
    owned = [
        rs
        for rs in replicasets
        if not uid
        or any(
            ref.get("uid") == uid and ref.get("controller")
            for ref in rs["metadata"].get("ownerReferences") or []
        )
    ]
    older = [rs for rs in owned if 0 < revision(rs) < current]
    return max(older, key=revision) if older else None


def undo_patch(deployment: dict[str, Any], replicaset: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch kubectl sends: the template, and the annotations of that revision."""
    dep_ann = deployment["metadata"].get("annotations") or {}
    annotations = {k: v for k, v in dep_ann.items() if k in SKIP_ANNOTATIONS}
    for k, v in (replicaset["metadata"].get("annotations") or {}).items():
        if k not in SKIP_ANNOTATIONS:
            annotations[k] = v
    return [
        {
            "op": "replace",
            "path": "/spec/template",
            "value": without_hash(replicaset["spec"]["template"]),
        },
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ]


def default_client_factory(params: dict[str, Any]) -> Any:
    """An ApiClient from ``kubeconfig``/``context`` when given, in-cluster otherwise."""
    from kubernetes import client, config

    kubeconfig = params.get("kubeconfig")
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig, context=params.get("context"))
    try:
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)
        return client.ApiClient(cfg)
    except config.ConfigException:
        return config.new_client_from_config(context=params.get("context"))


class KubernetesDeploymentAction:
    kind = "kubernetes"

    def __init__(
        self,
        params: dict[str, Any],
        allowed_namespaces: list[str],
        client_factory: Callable[[dict[str, Any]], Any] = default_client_factory,
    ) -> None:
        self.namespace = params["namespace"]
        self.name = params["deployment"]
        self.allowed = list(allowed_namespaces)
        self.params = params
        self._factory = client_factory
        self._api: Any = None

    @property
    def where(self) -> str:
        return f"deployment {self.namespace}/{self.name}"

    def _apps(self) -> Any:
        if self._api is None:
            from kubernetes import client

            try:
                self._api = client.AppsV1Api(self._factory(self.params))
            except Exception as exc:  # the client raises many types for a bad config
                raise ActionError(f"no Kubernetes client configuration: {exc}") from None
        return self._api

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            resp = fn(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S, **kw)
            return json.loads(resp.data)
        except ApiException as exc:
            body = (
                (exc.body or b"").decode(errors="replace")
                if isinstance(exc.body, bytes)
                else exc.body
            )
            try:
                message = json.loads(body or "{}").get("message") or exc.reason
            except ValueError:
                message = exc.reason
            raise KubeError(
                f"{what} {self.where}: HTTP {exc.status}: {message}", exc.status or 0
            ) from None
        except (HTTPError, OSError, ValueError) as exc:
            raise KubeError(f"{what} {self.where}: {exc}") from None

    def _read(self) -> dict[str, Any]:
        """The Deployment, once the namespace, its opt-in and its pause allow a rollback."""
        refusal = namespace_refusal(self.namespace, self.allowed)
        if refusal:
            raise Refused(
                f"{refusal}; add it to the target's allowed_namespaces and grant the Role "
                "there (docs/rollback.md)"
            )
        apps = self._apps()
        dep: dict[str, Any] = self._call(
            "get", apps.read_namespaced_deployment, self.name, self.namespace
        )
        labels = dep.get("metadata", {}).get("labels") or {}
        if labels.get(OPT_IN_LABEL) != OPT_IN_VALUE:
            raise Refused(
                f"{self.where} has not opted in to rollbacks: it lacks the label "
                f'{OPT_IN_LABEL}: "{OPT_IN_VALUE}" (kubectl label deployment {self.name} '
                f"-n {self.namespace} {OPT_IN_LABEL}={OPT_IN_VALUE})"
            )
        if dep.get("spec", {}).get("paused"):
            raise ActionError(
                f"{self.where} is paused; resume it (kubectl rollout resume) before rolling back"
            )
        return dep

    def _replicasets(self, dep: dict[str, Any]) -> list[dict[str, Any]]:
        selector = label_selector(dep["spec"].get("selector") or {})
        rs_list = self._call(
            "list replicasets of",
            self._apps().list_namespaced_replica_set,
            self.namespace,
            label_selector=selector,
        )
        return list(rs_list.get("items") or [])

    def plan(self) -> dict[str, Any]:
        dep = self._read()
        replicasets = self._replicasets(dep)
        target = previous_replicaset(dep, replicasets)
        if target is None:
            raise ActionError(f"{self.where}: no earlier revision to roll back to")
        return {
            "from_revision": revision(dep),
            "to_revision": revision(target),
            "replicaset": target["metadata"]["name"],
        }

    def apply(self, plan: dict[str, Any], *, dry_run: bool) -> Outcome:
        result: Outcome = patch_with_retry(
            self._read, lambda dep: self._attempt(plan, dep, dry_run=dry_run), self.where
        )
        return result

    def _attempt(self, plan: dict[str, Any], dep: dict[str, Any], *, dry_run: bool) -> Outcome:
        """Decide on ``dep`` as just read (and its ReplicaSets, listed now) and patch."""
        by_name = {rs["metadata"]["name"]: rs for rs in self._replicasets(dep)}
        target = by_name.get(plan["replicaset"])
        if target is None:
            raise ActionError(f"{self.where}: replicaset {plan['replicaset']} is gone")
        same = without_hash(target["spec"]["template"]) == without_hash(dep["spec"]["template"])
        if revision(dep) != plan["from_revision"]:
            if same:
                return Outcome(
                    SUCCEEDED,
                    f"{self.where} already on the template of revision "
                    f"{plan['to_revision']} (patched before a restart)",
                )
            return Outcome(
                SKIPPED,
                f"{self.where} moved to revision {revision(dep)} since the "
                f"decision (from {plan['from_revision']}); not touching it",
            )
        if same:
            return Outcome(
                SKIPPED,
                f"skipped rollback: current template already matches "
                f"revision {plan['to_revision']}",
            )
        if dry_run:
            return Outcome(
                DRY_RUN, f"would roll {self.where} back to revision {plan['to_revision']}"
            )
        body = with_precondition(undo_patch(dep, target), JSON_PATCH, resource_version(dep))
        self._call(
            "patch",
            self._apps().patch_namespaced_deployment,
            self.name,
            self.namespace,
            body,
            _content_type=JSON_PATCH,
        )
        return Outcome(
            SUCCEEDED,
            f"{self.where} rolled back to revision {plan['to_revision']} "
            f"(replicaset {plan['replicaset']})",
        )
