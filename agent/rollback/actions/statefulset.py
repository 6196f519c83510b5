"""StatefulSet: what ``kubectl rollout undo statefulset/NAME`` does.

kubectl (pkg/polymorphichelpers/rollback.go, StatefulSetRollbacker) lists the
ControllerRevisions the StatefulSet controls, takes the one of the second-highest
``revision`` and sends its ``data`` unchanged as a strategic merge patch: the data is
``{"spec":{"template":{…,"$patch":"replace"}}}``, which replaces the pod template whole.
When the StatefulSet's template already equals that data, nothing is sent ("skipped
rollback"). Fewer than two revisions: nothing to roll back to.

A partitioned rolling update stopped mid-way (``spec.updateStrategy.rollingUpdate
.partition`` above 0 while ``status.currentRevision`` and ``status.updateRevision``
differ) is someone's staged rollout: undoing it would move the pods below the partition
too, so it is refused unless the target says ``allow_partitioned: true``. With
``updateStrategy: OnDelete`` the template is restored but pods change only as they are
deleted, as with kubectl; the outcome says so.
"""

from __future__ import annotations

import copy
from typing import Any

from agent.rollback.actions.base import DRY_RUN, SKIPPED, SUCCEEDED, ActionError, Outcome, Refused
from agent.rollback.actions.kube_api import (
    STRATEGIC_MERGE_PATCH,
    Kube,
    controlled_by,
    label_selector,
    opt_in_refusal,
    patch_with_retry,
    resource_version,
    with_precondition,
)


def template_patch(sts: dict[str, Any]) -> dict[str, Any]:
    """getStatefulSetPatch: the form a ControllerRevision stores the template in."""
    template = copy.deepcopy((sts.get("spec") or {}).get("template") or {})
    template["$patch"] = "replace"
    return {"spec": {"template": template}}


def history(sts: dict[str, Any], revisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ControllerRevisions the StatefulSet controls, oldest revision first."""
    return sorted((r for r in revisions if controlled_by(r, sts)), key=lambda r: int(r["revision"]))


def partition_midway(sts: dict[str, Any]) -> int:
    """The partition of a partitioned rollout stopped mid-way, else 0."""
    strategy = (sts.get("spec") or {}).get("updateStrategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return 0
    partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
    status = sts.get("status") or {}
    if partition > 0 and status.get("currentRevision") != status.get("updateRevision"):
        return partition
    return 0


class StatefulSetAction:
    kind = "StatefulSet"

    def __init__(
        self, kube: Kube, namespace: str, name: str, *, allow_partitioned: bool = False
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.allow_partitioned = allow_partitioned
        self.where = f"statefulset {namespace}/{name}"

    def _read(self) -> dict[str, Any]:
        sts: dict[str, Any] = self.kube.statefulset(self.namespace, self.name)
        refusal = opt_in_refusal(sts, self.kind)
        if refusal:
            raise Refused(refusal)
        partition = partition_midway(sts)
        if partition and not self.allow_partitioned:
            status = sts.get("status") or {}
            raise Refused(
                f"{self.where} is in a partitioned rollout stopped at partition {partition} "
                f"({status.get('updatedReplicas', '?')} of {status.get('replicas', '?')} pods "
                f"on {status.get('updateRevision')}): undoing it would also move the pods "
                "below the partition; finish or revert it by hand, or set "
                "allow_partitioned: true on the target"
            )
        return sts

    def _history(self, sts: dict[str, Any]) -> list[dict[str, Any]]:
        selector = label_selector((sts.get("spec") or {}).get("selector") or {})
        return history(sts, self.kube.controllerrevisions(self.namespace, selector))

    def plan(self) -> dict[str, Any]:
        sts = self._read()
        revisions = self._history(sts)
        if len(revisions) < 2:
            raise ActionError(f"{self.where}: no earlier revision to roll back to")
        target = revisions[-2]
        return {
            "from": (sts.get("status") or {}).get("updateRevision", ""),
            "from_revision": int(revisions[-1]["revision"]),
            "to_revision": int(target["revision"]),
            "controllerrevision": target["metadata"]["name"],
        }

    def apply(self, plan: dict[str, Any], *, dry_run: bool) -> Outcome:
        def attempt(sts: dict[str, Any]) -> Outcome:
            by_name = {r["metadata"]["name"]: r for r in self._history(sts)}
            target = by_name.get(plan["controllerrevision"])
            if target is None:
                raise ActionError(
                    f"{self.where}: controllerrevision {plan['controllerrevision']} is gone"
                )
            same = template_patch(sts) == target.get("data")
            now = (sts.get("status") or {}).get("updateRevision", "")
            if now != plan["from"]:
                if same:
                    return Outcome(
                        SUCCEEDED,
                        f"{self.where} already on the template of revision "
                        f"{plan['to_revision']} (patched before a restart)",
                    )
                return Outcome(
                    SKIPPED,
                    f"{self.where} moved to {now} since the decision (from {plan['from']}); "
                    "not touching it",
                )
            if same:
                return Outcome(
                    SKIPPED,
                    f"skipped rollback: current template already matches revision "
                    f"{plan['to_revision']}",
                )
            if dry_run:
                return Outcome(
                    DRY_RUN, f"would roll {self.where} back to revision {plan['to_revision']}"
                )
            body = with_precondition(target["data"], STRATEGIC_MERGE_PATCH, resource_version(sts))
            self.kube.patch_statefulset(self.namespace, self.name, body, STRATEGIC_MERGE_PATCH)
            strategy = ((sts.get("spec") or {}).get("updateStrategy") or {}).get("type")
            note = (
                "; updateStrategy OnDelete: pods change as they are deleted"
                if strategy == "OnDelete"
                else ""
            )
            return Outcome(
                SUCCEEDED,
                f"{self.where} rolled back to revision {plan['to_revision']} "
                f"(controllerrevision {plan['controllerrevision']}){note}",
            )

        result: Outcome = patch_with_retry(self._read, attempt, self.where)
        return result
