"""The InferenceServices' spec history, which KServe does not keep and a rollback needs.

For each ``kubernetes_workload`` target that may act on InferenceServices, every
``history_interval`` (30 s by default) the controller lists the opted-in
InferenceServices (label ``vigil.dev/rollback=enabled``) of each allowed namespace and
journals each spec that differs from the newest one it holds: so the spec is recorded
when first seen and on every change seen. A change undone within one interval is not
seen; the action's own reads record too. The journal bounds what it keeps (journal.py:
specs per object, objects in all); an object refused by the bound is counted in
``vigil_rollback_history_refused_total``.

An object missing from a namespace's LIST was deleted or opted out: its rows are dropped,
before the new objects are recorded, so that churn (models created and deleted over the
journal's life) never fills the bound on objects. Only a LIST that succeeded says what is
gone: a namespace whose LIST failed for any target keeps its whole history.

One LIST per namespace and interval; errors (RBAC not granted yet, the CRD not
installed) are logged once per distinct message and retried at the next interval.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from agent.rollback.actions.base import ActionError
from agent.rollback.actions.kserve import object_key
from agent.rollback.actions.kube_api import KSERVE, Kube
from agent.rollback.actions.kubernetes import OPT_IN_LABEL, OPT_IN_VALUE
from agent.rollback.actions.owners import INFERENCESERVICE
from agent.rollback.journal import Journal, JournalError
from agent.rollback.policy import TargetSpec

log = logging.getLogger("vigil.rollback")


def history_targets(targets: dict[str, TargetSpec]) -> list[TargetSpec]:
    return [
        t
        for t in targets.values()
        if t.action == "kubernetes_workload" and INFERENCESERVICE in t.params.get("kinds", [])
    ]


class SpecHistory:
    def __init__(
        self,
        targets: list[TargetSpec],
        journal: Journal,
        client_factory: Callable[[dict[str, Any]], Any],
        refused: Callable[[], None] = lambda: None,
    ) -> None:
        self.targets = targets
        self.journal = journal
        self.kubes = [Kube(t.params, client_factory) for t in targets]
        self.refused = refused
        self._last_error = ""

    @property
    def interval(self) -> float:
        return min(float(t.params["history_interval"]) for t in self.targets)

    def poll(self) -> dict[str, int]:
        """One pass over every target and namespace: counts of recorded, unchanged and
        refused specs, and of objects forgotten (gone from their namespace)."""
        counts = {"recorded": 0, "unchanged": 0, "refused": 0, "forgotten": 0}
        selector = f"{OPT_IN_LABEL}={OPT_IN_VALUE}"
        listed: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        failed: set[str] = set()
        since: dict[str, float] = {}
        for target, kube in zip(self.targets, self.kubes, strict=True):
            for ns in target.params["allowed_namespaces"]:
                since.setdefault(ns, self.journal.clock())
                try:
                    items = kube.customs(KSERVE, ns, selector)
                except ActionError as exc:
                    failed.add(ns)
                    self._error(target.name, str(exc))
                    continue
                listed.setdefault(ns, []).extend((target.name, i) for i in items)
        try:
            for ns, seen in listed.items():
                if ns in failed:
                    continue
                keep = {object_key(ns, (i.get("metadata") or {}).get("name", "")) for _, i in seen}
                counts["forgotten"] += self.journal.forget_specs(
                    object_key(ns, ""), keep, since[ns]
                )
        except JournalError as exc:
            self._error("", str(exc))
        for ns, seen in listed.items():
            for target_name, isvc in seen:
                meta = isvc.get("metadata") or {}
                try:
                    result = self.journal.record_spec(
                        object_key(ns, meta.get("name", "")),
                        isvc.get("spec") or {},
                        meta.get("generation", 0),
                    )
                except JournalError as exc:
                    self._error(target_name, str(exc))
                    continue
                counts[result] += 1
                if result == "refused":
                    self.refused()
        if counts["forgotten"]:
            log.info(
                "forgot the spec history of deleted inferenceservices",
                extra={"objects": counts["forgotten"]},
            )
        return counts

    def _error(self, target: str, message: str) -> None:
        if message != self._last_error:
            log.warning(
                "cannot record inferenceservice specs", extra={"target": target, "error": message}
            )
        self._last_error = message

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.poll()
            except Exception:  # a bug here must not end the history for good
                log.exception("spec history poll failed")
            stop.wait(self.interval)
