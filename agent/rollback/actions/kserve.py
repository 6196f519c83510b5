"""KServe ``InferenceService`` (serving.kserve.io/v1beta1): the canary back to zero, or the
previous spec back.

- **Canary in progress** (serverless mode, ``spec.predictor.canaryTrafficPercent`` below
  100 and ``status.components.predictor.previousRolledoutRevision`` set): all traffic back
  to the previous rolled-out revision, as KServe's canary example does under "Rollback and
  pin the previous model" (docs/modelserving/v1beta1/rollout/canary-example.md): the
  InferenceService applied again with ``canaryTrafficPercent: 0``, which as a patch is the
  merge patch ``{"spec":{"predictor":{"canaryTrafficPercent":0}}}``. The canary revision
  stays, with no traffic, for its owners to look at. Already 0: skipped.
- **No canary** (a plain update, or raw-deployment mode, where KServe has no traffic split
  and ``canaryTrafficPercent`` has no effect): the previous spec from the controller's own
  history of the object (KServe keeps none; Knative's revisions are not a spec one can
  apply back), recorded in the journal when the controller first sees the object and on
  every change it observes (history.py polls every ``history_interval``; each read here
  records too). The previous spec is the newest recorded one that differs from the current
  and was not itself rolled back from; it replaces ``/spec`` whole in one JSON patch. No
  such spec (the controller never saw an earlier one): failed, saying so.

Both modes are handled: the canary path needs Knative's traffic split (serverless), the
history path works the same for both.
"""

from __future__ import annotations

from typing import Any

from agent.rollback.actions.base import DRY_RUN, SKIPPED, SUCCEEDED, ActionError, Outcome, Refused
from agent.rollback.actions.kube_api import (
    JSON_PATCH,
    KSERVE,
    MERGE_PATCH,
    Kube,
    opt_in_refusal,
    patch_with_retry,
    resource_version,
    with_precondition,
)
from agent.rollback.journal import Journal, spec_digest

# The docs' rollback, as the change `kubectl apply` makes to the object.
CANARY_ROLLBACK_PATCH: dict[str, Any] = {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
# KServe 0.15 renamed RawDeployment to Standard; both mean "no Knative, no traffic split".
RAW_MODES = frozenset({"RawDeployment", "Standard"})


def object_key(namespace: str, name: str) -> str:
    return f"inferenceservice:{namespace}/{name}"


def raw_mode(isvc: dict[str, Any]) -> bool:
    meta = isvc.get("metadata") or {}
    mode = (meta.get("annotations") or {}).get(MODE_ANNOTATION) or (isvc.get("status") or {}).get(
        "deploymentMode"
    )
    return mode in RAW_MODES


def canary(isvc: dict[str, Any]) -> tuple[int | None, dict[str, Any]]:
    """(canaryTrafficPercent when a canary split applies, the predictor's status)."""
    predictor = ((isvc.get("spec") or {}).get("predictor")) or {}
    status = (((isvc.get("status") or {}).get("components")) or {}).get("predictor") or {}
    pct = predictor.get("canaryTrafficPercent")
    if raw_mode(isvc) or pct is None or int(pct) >= 100:
        return None, status
    return int(pct), status


def previous_spec(history: list[dict[str, Any]], current: str) -> dict[str, Any] | None:
    """The newest recorded spec that is not ``current`` (a digest) and was not rolled back
    from."""
    for row in reversed(history):
        if row["digest"] != current and not row["rolled_back"]:
            return row
    return None


class InferenceServiceAction:
    kind = "InferenceService"

    def __init__(self, kube: Kube, namespace: str, name: str, journal: Journal) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.journal = journal
        self.key = object_key(namespace, name)
        self.where = f"inferenceservice {namespace}/{name}"

    def _read(self) -> dict[str, Any]:
        isvc: dict[str, Any] = self.kube.custom(KSERVE, self.namespace, self.name)
        refusal = opt_in_refusal(isvc, self.kind)
        if refusal:
            raise Refused(refusal)
        # Every read is an observation: the history stays current even between polls.
        self.journal.record_spec(
            self.key, isvc.get("spec") or {}, (isvc.get("metadata") or {}).get("generation", 0)
        )
        return isvc

    def plan(self) -> dict[str, Any]:
        isvc = self._read()
        pct, status = canary(isvc)
        if pct is not None:
            if pct == 0:
                return {
                    "skip": f"{self.where} already sends all traffic to the previous revision "
                    f"{status.get('previousRolledoutRevision', '?')} (canaryTrafficPercent 0)"
                }
            previous = status.get("previousRolledoutRevision")
            if not previous:
                raise ActionError(
                    f"{self.where}: canary at {pct}% but KServe shows no previous rolled-out "
                    "revision to send the traffic back to"
                )
            return {
                "mode": "canary",
                "canary_percent": pct,
                "from_revision": status.get("latestReadyRevision")
                or status.get("latestCreatedRevision", ""),
                "to_revision": previous,
            }
        current = spec_digest(isvc.get("spec") or {})
        row = previous_spec(self.journal.specs(self.key), current)
        if row is None:
            raise ActionError(
                f"{self.where}: no earlier spec recorded; the controller records the spec "
                "when it first sees the object and on each change, and has seen only this one"
            )
        return {
            "mode": "restore",
            "from_digest": current,
            "to_digest": row["digest"],
            "to_generation": row["generation"],
            "spec": row["spec"],
        }

    def apply(self, plan: dict[str, Any], *, dry_run: bool) -> Outcome:
        if "skip" in plan:
            return Outcome(SKIPPED, plan["skip"])
        attempt = self._canary if plan["mode"] == "canary" else self._restore

        def run(isvc: dict[str, Any]) -> Outcome:
            return attempt(isvc, plan, dry_run)

        result: Outcome = patch_with_retry(self._read, run, self.where)
        return result

    def _canary(self, isvc: dict[str, Any], plan: dict[str, Any], dry_run: bool) -> Outcome:
        pct, status = canary(isvc)
        if pct == 0:
            return Outcome(
                SUCCEEDED,
                f"{self.where} already sends all traffic to {plan['to_revision']} "
                "(canaryTrafficPercent 0)",
            )
        if pct is None or status.get("previousRolledoutRevision") != plan["to_revision"]:
            return Outcome(
                SKIPPED,
                f"{self.where} is no longer a canary over {plan['to_revision']} "
                f"(canaryTrafficPercent {pct}, previous rolled-out revision "
                f"{status.get('previousRolledoutRevision')}); not touching it",
            )
        if dry_run:
            return Outcome(
                DRY_RUN, f"would send all traffic of {self.where} back to {plan['to_revision']}"
            )
        body = with_precondition(CANARY_ROLLBACK_PATCH, MERGE_PATCH, resource_version(isvc))
        self.kube.patch_custom(KSERVE, self.namespace, self.name, body, MERGE_PATCH)
        return Outcome(
            SUCCEEDED,
            f"{self.where}: canary {plan['from_revision']} at {pct}% -> 0%, all traffic on "
            f"{plan['to_revision']}",
        )

    def _restore(self, isvc: dict[str, Any], plan: dict[str, Any], dry_run: bool) -> Outcome:
        current = spec_digest(isvc.get("spec") or {})
        if current == plan["to_digest"]:
            self.journal.mark_rolled_back(self.key, plan["from_digest"])
            return Outcome(
                SUCCEEDED, f"{self.where} already on spec {plan['to_digest']} (before a restart)"
            )
        if current != plan["from_digest"]:
            return Outcome(
                SKIPPED,
                f"{self.where} changed since the decision (spec {current}, was "
                f"{plan['from_digest']}); not touching it",
            )
        if dry_run:
            return Outcome(
                DRY_RUN,
                f"would restore {self.where} to spec {plan['to_digest']} "
                f"(generation {plan['to_generation']})",
            )
        # Marked first: if the patch fails, the bad spec is still known as bad.
        self.journal.mark_rolled_back(self.key, plan["from_digest"])
        body = with_precondition(restore_patch(plan["spec"]), JSON_PATCH, resource_version(isvc))
        self.kube.patch_custom(KSERVE, self.namespace, self.name, body, JSON_PATCH)
        return Outcome(
            SUCCEEDED,
            f"{self.where} restored to spec {plan['to_digest']} (generation "
            f"{plan['to_generation']}) from {plan['from_digest']}",
        )


def restore_patch(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"op": "replace", "path": "/spec", "value": spec}]
