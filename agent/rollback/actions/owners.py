"""From the alert to the object that owns the model: the owner-reference walk.

An alert names a pod (``namespace``, ``pod``: the agent's per-process labels) or the
workload the agent saw above it (``namespace``, ``workload_kind``, ``workload``: what the
shipped rollback rules carry). The agent names that workload from the pod alone, without
reading ReplicaSets: a Deployment's pods as the Deployment, an Argo Rollout's pods as their
ReplicaSet, a KServe predictor's pods as the Deployment KServe (or Knative) made. So no
per-model mapping is written by hand: :func:`resolve_workload` finishes the walk, and
:func:`resolve_owner` does all of it from a pod. From the pod:

- a pod labelled ``serving.kserve.io/inferenceservice: NAME`` belongs to that KServe
  InferenceService, in both serverless and raw-deployment modes (KServe labels every
  predictor pod; in serverless mode its controller chain runs through Knative objects
  the controller must not touch);
- otherwise its controller reference: a ReplicaSet, whose own controller is a Deployment
  or an Argo Rollout; or a StatefulSet.

From a workload: a StatefulSet is itself; a ReplicaSet leads to its controller as above;
a Deployment labelled ``serving.kserve.io/inferenceservice`` (KServe labels the predictor's
Deployment in both modes) is that InferenceService's, any other Deployment is itself.

Anything else (a bare pod, a DaemonSet, a Job, a ReplicaSet nobody controls) is refused
with what was found. The walk reads at most :data:`MAX_CALLS` objects and follows at most
:data:`MAX_DEPTH` references: owner chains of served models are two long, and a longer one
is not a shape this knows how to roll back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.rollback.actions.base import Refused

KSERVE_POD_LABEL = "serving.kserve.io/inferenceservice"
DEPLOYMENT, ROLLOUT, STATEFULSET, INFERENCESERVICE = (
    "Deployment",
    "Rollout",
    "StatefulSet",
    "InferenceService",
)
KINDS = (DEPLOYMENT, ROLLOUT, STATEFULSET, INFERENCESERVICE)
# Pod -> ReplicaSet -> Deployment/Rollout is two references.
MAX_DEPTH = 2
# The pod and one ReplicaSet.
MAX_CALLS = 2
# apiVersion (group part) each owner kind must come from: a CRD of another group that is
# also called "Rollout" is not Argo's.
OWNER_GROUPS = {DEPLOYMENT: "apps", ROLLOUT: "argoproj.io", STATEFULSET: "apps"}


@dataclass(frozen=True)
class Owner:
    kind: str  # one of KINDS
    namespace: str
    name: str
    via: tuple[str, ...]  # the objects walked, "Pod/x", "ReplicaSet/y"

    @property
    def key(self) -> str:
        """What is rolled back, for the journal and the per-object cooldown."""
        return f"{self.kind.lower()}:{self.namespace}/{self.name}"


def controller_ref(obj: dict[str, Any]) -> dict[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def _group(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


def _kserve(obj: dict[str, Any]) -> str:
    return str(((obj.get("metadata") or {}).get("labels") or {}).get(KSERVE_POD_LABEL) or "")


def resolve_workload(
    namespace: str,
    kind: str,
    name: str,
    get_replicaset: Callable[[str, str], dict[str, Any]],
    get_deployment: Callable[[str, str], dict[str, Any]],
) -> Owner:
    """The owner of the workload the agent named (at most :data:`MAX_CALLS` reads)."""
    via = [f"{kind}/{name}"]
    if kind in (STATEFULSET, ROLLOUT, INFERENCESERVICE):
        return Owner(kind, namespace, name, ())
    if kind == "ReplicaSet":
        ref = controller_ref(get_replicaset(namespace, name))
        group = _group((ref or {}).get("apiVersion", ""))
        if ref and ref.get("kind") == ROLLOUT and group == OWNER_GROUPS[ROLLOUT]:
            return Owner(ROLLOUT, namespace, ref.get("name", ""), tuple(via))
        if not (ref and ref.get("kind") == DEPLOYMENT and group == OWNER_GROUPS[DEPLOYMENT]):
            what = f"{ref.get('kind')}/{ref.get('name')}" if ref else "nothing"
            raise Refused(
                f"ReplicaSet/{name} is controlled by {what}, which is not a kind the "
                f"controller rolls back ({', '.join(KINDS)})"
            )
        name = ref.get("name", "")
        via.append(f"{DEPLOYMENT}/{name}")
        kind = DEPLOYMENT
    if kind == DEPLOYMENT:
        isvc = _kserve(get_deployment(namespace, name))
        if isvc:
            return Owner(INFERENCESERVICE, namespace, isvc, tuple(via))
        return Owner(DEPLOYMENT, namespace, name, tuple(via[:-1]))
    raise Refused(
        f"{kind}/{name} is not a kind the controller rolls back ({', '.join(KINDS)}, "
        "or a ReplicaSet of one)"
    )


def resolve_owner(
    namespace: str,
    pod: str,
    get_pod: Callable[[str, str], dict[str, Any]],
    get_replicaset: Callable[[str, str], dict[str, Any]],
) -> Owner:
    """The owner of ``namespace``/``pod``; :class:`Refused` when it is not a kind this
    rolls back. The getters raise ActionError (a 404, a 403) with their own message."""
    calls = 0

    def read(getter: Callable[[str, str], dict[str, Any]], name: str) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls > MAX_CALLS:  # unreachable with today's kinds; the bound stays explicit
            raise Refused(f"owner of pod {namespace}/{pod}: more than {MAX_CALLS} reads")
        return getter(namespace, name)

    obj = read(get_pod, pod)
    via = [f"Pod/{pod}"]
    isvc = ((obj.get("metadata") or {}).get("labels") or {}).get(KSERVE_POD_LABEL)
    if isvc:
        return Owner(INFERENCESERVICE, namespace, isvc, tuple(via))
    for _depth in range(MAX_DEPTH):
        ref = controller_ref(obj)
        if ref is None:
            raise Refused(
                f"{' -> '.join(via)} has no controller: nothing to roll back "
                "(a bare pod, or one whose owner was deleted)"
            )
        kind, name = ref.get("kind", ""), ref.get("name", "")
        group = _group(ref.get("apiVersion", ""))
        if kind in OWNER_GROUPS and group == OWNER_GROUPS[kind]:
            return Owner(kind, namespace, name, tuple(via))
        if not (kind == "ReplicaSet" and group == "apps" and len(via) == 1):
            raise Refused(
                f"{' -> '.join(via)} is controlled by {kind}/{name} "
                f"({ref.get('apiVersion')}), which is not a kind the controller rolls back "
                f"({', '.join(KINDS)})"
            )
        obj = read(get_replicaset, name)
        via.append(f"ReplicaSet/{name}")
    raise Refused(f"owner of pod {namespace}/{pod}: more than {MAX_DEPTH} owner references")
