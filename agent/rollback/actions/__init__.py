"""Rollback actions behind one interface (:mod:`.base`), and :func:`build` to make one.

- ``release_dir``: switch a ``current`` symlink to the previous healthy version;
- ``kubernetes``: ``kubectl rollout undo`` for a Deployment;
- ``kubernetes_workload``: whatever owns the alert's pod (Deployment, Argo Rollout,
  StatefulSet, KServe InferenceService), found through its owner references;
- ``command``: run a configured argv with the alert as environment.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.rollback.actions.base import Action, ActionError, Outcome, gpu_ids_of
from agent.rollback.actions.command import CommandAction
from agent.rollback.actions.kubernetes import KubernetesDeploymentAction, default_client_factory
from agent.rollback.actions.release_dir import ReleaseDirAction
from agent.rollback.actions.workload import WorkloadAction
from agent.rollback.journal import Journal, Rollback
from agent.rollback.policy import TargetSpec

__all__ = ["KINDS", "Action", "ActionError", "Outcome", "Tools", "build", "gpu_ids_of"]

KINDS = ("release_dir", "kubernetes", "kubernetes_workload", "command")
# A hook that takes longer than this is stuck; the journal records it as failed.
DEFAULT_COMMAND_TIMEOUT = 60.0


@dataclass
class Tools:
    """The outside world actions use, injected so that tests can point it elsewhere."""

    journal: Journal
    runner: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run
    kube_client: Callable[[dict[str, Any]], Any] = field(default=default_client_factory)
    # The controller's cooldown, also applied per resolved object (several pods' alerts
    # resolve to one owner).
    cooldown: float = 0.0


def build(rollback: Rollback, tools: Tools, spec: TargetSpec) -> Action:
    """The action of a journaled rollback. ``spec`` is its target as configured now: what
    the controller may do comes from there, what the alert asked for from the row."""
    p = rollback.params
    if rollback.action == "release_dir":
        return ReleaseDirAction(
            p["path"],
            tools.journal,
            rollback.labels,
            rollback.reason,
            version_label=p.get("version_label", "version"),
        )
    if rollback.action == "kubernetes":
        return KubernetesDeploymentAction(p, spec.params["allowed_namespaces"], tools.kube_client)
    if rollback.action == "kubernetes_workload":
        return WorkloadAction(
            p,
            spec.params,
            tools.journal,
            tools.kube_client,
            rollback_id=rollback.id,
            cooldown=tools.cooldown,
        )
    if rollback.action == "command":
        extra = {
            "VIGIL_ROLLBACK_ID": str(rollback.id),
            "VIGIL_ROLLBACK_TARGET": rollback.target,
            "VIGIL_ROLLBACK_REASON": rollback.reason,
            "VIGIL_ALERT_FINGERPRINT": rollback.fingerprint,
            "VIGIL_ALERT_STARTS_AT": rollback.starts_at,
            **{str(k): str(v) for k, v in (p.get("env") or {}).items()},
        }
        timeout = float(p.get("timeout", DEFAULT_COMMAND_TIMEOUT))
        return CommandAction(list(p["argv"]), rollback.labels, extra, timeout, tools.runner)
    raise ActionError(f"unknown action {rollback.action!r}")
