"""``kubernetes_workload``: roll back whatever owns the alert's pod.

The target names a namespace and a pod (``{namespace}``, ``{pod}`` from the alert) or the
workload the agent saw (``{workload_kind}``, ``{workload}``); the plan walks the owners
(owners.py) to a Deployment, an Argo Rollout, a StatefulSet or
a KServe InferenceService and asks that kind's action for its plan, which is journaled
with the object it resolved to. ``apply`` acts on that object, not on the pod (which the
rollback itself may replace), through the same kind's action.

What it may touch is checked at every step, against the configuration running then: the
namespace must be in ``allowed_namespaces``, the kind in ``kinds``, and the owning object
(the one patched, never the pod) must carry ``vigil.dev/rollback: "enabled"``. Several
pods of one object fire their own alerts: the second rollback of the same object within
the cooldown is skipped, naming the first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.rollback.actions.argo import RolloutAction
from agent.rollback.actions.base import SKIPPED, SUCCEEDED, Action, Outcome, Refused
from agent.rollback.actions.kserve import InferenceServiceAction
from agent.rollback.actions.kube_api import Kube
from agent.rollback.actions.kubernetes import KubernetesDeploymentAction
from agent.rollback.actions.owners import (
    DEPLOYMENT,
    INFERENCESERVICE,
    KINDS,
    ROLLOUT,
    STATEFULSET,
    resolve_owner,
    resolve_workload,
)
from agent.rollback.actions.statefulset import StatefulSetAction
from agent.rollback.journal import Journal
from agent.rollback.policy import namespace_refusal


class WorkloadAction:
    kind = "kubernetes_workload"

    def __init__(
        self,
        params: dict[str, Any],
        authority: dict[str, Any],
        journal: Journal,
        client_factory: Callable[[dict[str, Any]], Any],
        *,
        rollback_id: int = 0,
        cooldown: float = 0.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.namespace = params["namespace"]
        self.pod = params.get("pod", "")
        self.workload = (params.get("workload_kind", ""), params.get("workload", ""))
        self.what = f"pod {self.pod}" if self.pod else "{} {}".format(*self.workload)
        self.params = params
        self.allowed = list(authority.get("allowed_namespaces") or [])
        self.kinds = list(authority.get("kinds") or KINDS)
        self.allow_partitioned = bool(authority.get("allow_partitioned", False))
        self.journal = journal
        self.factory = client_factory
        self.kube = Kube(params, client_factory)
        self.rollback_id = rollback_id
        self.cooldown = cooldown
        self.clock = clock or journal.clock

    def _check_namespace(self) -> None:
        refusal = namespace_refusal(self.namespace, self.allowed)
        if refusal:
            raise Refused(
                f"{refusal}; add it to the target's allowed_namespaces and grant the Role "
                "there (docs/rollback.md)"
            )

    def _check_kind(self, kind: str, name: str) -> None:
        if kind not in self.kinds:
            raise Refused(
                f"{self.what} in {self.namespace} belongs to {kind} {name}, and the target's "
                f"kinds are {', '.join(self.kinds)}"
            )

    def inner(self, kind: str, name: str) -> Action:
        if kind == DEPLOYMENT:
            return KubernetesDeploymentAction(
                {**self.params, "deployment": name}, self.allowed, self.factory
            )
        if kind == ROLLOUT:
            return RolloutAction(self.kube, self.namespace, name)
        if kind == STATEFULSET:
            return StatefulSetAction(
                self.kube, self.namespace, name, allow_partitioned=self.allow_partitioned
            )
        if kind == INFERENCESERVICE:
            return InferenceServiceAction(self.kube, self.namespace, name, self.journal)
        raise Refused(f"{kind} is not a kind the controller rolls back")

    def plan(self) -> dict[str, Any]:
        self._check_namespace()
        if self.pod:
            owner = resolve_owner(self.namespace, self.pod, self.kube.pod, self.kube.replicaset)
        else:
            owner = resolve_workload(
                self.namespace, *self.workload, self.kube.replicaset, self.kube.deployment
            )
        self._check_kind(owner.kind, owner.name)
        inner = self.inner(owner.kind, owner.name).plan()
        return {
            "kind": owner.kind,
            "name": owner.name,
            "object": owner.key,
            "via": list(owner.via),
            **inner,
        }

    def apply(self, plan: dict[str, Any], *, dry_run: bool) -> Outcome:
        self._check_namespace()
        self._check_kind(plan["kind"], plan["name"])
        if "skip" in plan:
            return Outcome(SKIPPED, plan["skip"])
        last = self.journal.last_object_rollback(
            plan["object"], self.clock() - self.cooldown, self.rollback_id
        )
        if last is not None:
            ago = self.clock() - last[1]
            return Outcome(
                SKIPPED,
                f"{plan['object']} was rolled back {ago:.0f}s ago by rollback {last[0]} "
                f"(another pod's alert); cooldown {self.cooldown:g}s",
            )
        outcome = self.inner(plan["kind"], plan["name"]).apply(plan, dry_run=dry_run)
        if outcome.result == SUCCEEDED:
            self.journal.note_object_rollback(plan["object"], self.rollback_id)
        return outcome
