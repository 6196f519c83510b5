"""Argo Rollouts ``Rollout`` (argoproj.io/v1alpha1): abort an update, or undo a finished one.

What "roll back" means depends on where the Rollout stands (its status, as the Argo
Rollouts controller writes it):

- an update in progress (canary steps or a blue-green preview: ``status.currentPodHash``
  differs from ``status.stableRS``), paused or not: **abort**, what
  ``kubectl argo rollouts abort`` sends: the merge patch ``{"status":{"abort":true}}`` on
  the status subresource (on the main resource when the API server has no status
  subresource for Rollouts, as before Argo Rollouts v0.10). Argo then sends all traffic
  back to the stable ReplicaSet and scales the new one down;
- fully promoted (``currentPodHash == stableRS``): **undo**, what
  ``kubectl argo rollouts undo`` sends: a JSON patch replacing ``/spec/template`` with the
  template of the ReplicaSet of the second-highest ``rollout.argoproj.io/revision``
  (``rollouts-pod-template-hash`` removed); "skipped" when the template already matches.

Never fight Argo: a Rollout whose ``status.abort`` is already true (an AnalysisRun
failed, or someone aborted it) is ``skipped``. A Rollout that takes its template from a
Deployment (``spec.workloadRef``) has no template of its own to undo and is refused.
"""

from __future__ import annotations

import copy
from typing import Any

from agent.rollback.actions.base import DRY_RUN, SKIPPED, SUCCEEDED, ActionError, Outcome, Refused
from agent.rollback.actions.kube_api import (
    ARGO,
    JSON_PATCH,
    MERGE_PATCH,
    Kube,
    KubeError,
    controlled_by,
    label_selector,
    opt_in_refusal,
    patch_with_retry,
    resource_version,
    with_precondition,
)

REVISION = "rollout.argoproj.io/revision"
HASH_LABEL = "rollouts-pod-template-hash"
# pkg/kubectl-argo-rollouts/cmd/abort/abort.go: abortPatch
ABORT_PATCH: dict[str, Any] = {"status": {"abort": True}}
NOT_FOUND = 404


def revision(obj: dict[str, Any]) -> int:
    text = ((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION, "")
    try:
        return int(text)
    except ValueError:
        return 0


def without_hash(template: dict[str, Any]) -> dict[str, Any]:
    t = copy.deepcopy(template)
    labels = (t.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(HASH_LABEL, None)
    return t


def update_in_progress(rollout: dict[str, Any]) -> bool:
    status = rollout.get("status") or {}
    current, stable = status.get("currentPodHash"), status.get("stableRS")
    return bool(current and stable and current != stable)


def previous_replicaset(
    rollout: dict[str, Any], replicasets: list[dict[str, Any]]
) -> tuple[int, dict[str, Any] | None]:
    """(the latest revision, the ReplicaSet of the second-highest), as the undo command
    picks them among the ReplicaSets the Rollout controls."""
    owned = sorted(
        (rs for rs in replicasets if controlled_by(rs, rollout) and revision(rs) > 0),
        key=revision,
    )
    if not owned:
        return 0, None
    return revision(owned[-1]), owned[-2] if len(owned) > 1 else None


def undo_patch(replicaset: dict[str, Any]) -> list[dict[str, Any]]:
    """undo.go getRolloutPatch: one replace of /spec/template, without the hash label."""
    return [
        {
            "op": "replace",
            "path": "/spec/template",
            "value": without_hash(replicaset["spec"]["template"]),
        }
    ]


class RolloutAction:
    kind = "Rollout"

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.where = f"rollout {namespace}/{name}"

    def _read(self) -> dict[str, Any]:
        ro: dict[str, Any] = self.kube.custom(ARGO, self.namespace, self.name)
        refusal = opt_in_refusal(ro, self.kind)
        if refusal:
            raise Refused(refusal)
        if (ro.get("status") or {}).get("abort"):
            return ro
        if not update_in_progress(ro) and (ro.get("spec") or {}).get("workloadRef"):
            raise Refused(
                f"{self.where} takes its template from spec.workloadRef: roll back the "
                "referenced Deployment's template instead"
            )
        return ro

    def _replicasets(self, ro: dict[str, Any]) -> list[dict[str, Any]]:
        selector = label_selector((ro.get("spec") or {}).get("selector") or {})
        return self.kube.replicasets(self.namespace, selector)

    def plan(self) -> dict[str, Any]:
        ro = self._read()
        status = ro.get("status") or {}
        if status.get("abort"):
            return {"skip": self._already_aborted(status)}
        if update_in_progress(ro):
            return {
                "operation": "abort",
                "canary": status["currentPodHash"],
                "stable": status["stableRS"],
            }
        latest, target = previous_replicaset(ro, self._replicasets(ro))
        if target is None:
            raise ActionError(f"{self.where}: no earlier revision to roll back to")
        return {
            "operation": "undo",
            "from_revision": latest,
            "to_revision": revision(target),
            "replicaset": target["metadata"]["name"],
        }

    def _already_aborted(self, status: dict[str, Any]) -> str:
        why = status.get("message") or "status.abort is true"
        return (
            f"{self.where} is already aborting ({why}); not sending anything over Argo's own abort"
        )

    def apply(self, plan: dict[str, Any], *, dry_run: bool) -> Outcome:
        if "skip" in plan:
            return Outcome(SKIPPED, plan["skip"])
        if plan["operation"] == "abort":
            return self._abort(plan, dry_run)
        return self._undo(plan, dry_run)

    def _abort(self, plan: dict[str, Any], dry_run: bool) -> Outcome:
        def attempt(ro: dict[str, Any]) -> Outcome:
            status = ro.get("status") or {}
            if status.get("abort"):
                return Outcome(SKIPPED, self._already_aborted(status))
            if status.get("currentPodHash") != plan["canary"] or not update_in_progress(ro):
                return Outcome(
                    SKIPPED,
                    f"{self.where} is no longer updating to {plan['canary']} "
                    f"(now {status.get('currentPodHash')}, stable {status.get('stableRS')}); "
                    "not touching it",
                )
            if dry_run:
                return Outcome(DRY_RUN, f"would abort {self.where} (back to {plan['stable']})")
            body = with_precondition(ABORT_PATCH, MERGE_PATCH, resource_version(ro))
            try:
                self.kube.patch_custom(
                    ARGO, self.namespace, self.name, body, MERGE_PATCH, status=True
                )
            except KubeError as exc:
                if exc.status != NOT_FOUND:
                    raise
                # No status subresource (Argo Rollouts before v0.10): the main resource,
                # as the abort command falls back to.
                self.kube.patch_custom(ARGO, self.namespace, self.name, body, MERGE_PATCH)
            return Outcome(
                SUCCEEDED,
                f"{self.where} aborted: traffic back to the stable ReplicaSet {plan['stable']}, "
                f"update {plan['canary']} scaled down by Argo",
            )

        result: Outcome = patch_with_retry(self._read, attempt, self.where)
        return result

    def _undo(self, plan: dict[str, Any], dry_run: bool) -> Outcome:
        def attempt(ro: dict[str, Any]) -> Outcome:
            if (ro.get("status") or {}).get("abort"):
                return Outcome(SKIPPED, self._already_aborted(ro.get("status") or {}))
            replicasets = self._replicasets(ro)
            latest, _ = previous_replicaset(ro, replicasets)
            target = next(
                (rs for rs in replicasets if rs["metadata"]["name"] == plan["replicaset"]), None
            )
            if target is None or not controlled_by(target, ro):
                raise ActionError(f"{self.where}: replicaset {plan['replicaset']} is gone")
            current = (ro.get("spec") or {}).get("template") or {}
            same = without_hash(target["spec"]["template"]) == without_hash(current)
            if latest != plan["from_revision"]:
                if same:
                    return Outcome(
                        SUCCEEDED,
                        f"{self.where} already on the template of revision "
                        f"{plan['to_revision']} (patched before a restart)",
                    )
                return Outcome(
                    SKIPPED,
                    f"{self.where} moved to revision {latest} since the decision "
                    f"(from {plan['from_revision']}); not touching it",
                )
            if same:
                return Outcome(
                    SKIPPED,
                    "skipped rollback: current template already matches "
                    f"revision {plan['to_revision']}",
                )
            if dry_run:
                return Outcome(
                    DRY_RUN, f"would undo {self.where} to revision {plan['to_revision']}"
                )
            body = with_precondition(undo_patch(target), JSON_PATCH, resource_version(ro))
            self.kube.patch_custom(ARGO, self.namespace, self.name, body, JSON_PATCH)
            return Outcome(
                SUCCEEDED,
                f"{self.where} undone to revision {plan['to_revision']} "
                f"(replicaset {plan['replicaset']})",
            )

        result: Outcome = patch_with_retry(self._read, attempt, self.where)
        return result
