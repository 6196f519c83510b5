"""The controller's core: from a parsed notification to rollbacks done once.

``receive`` runs per webhook: for each alert it asks the policy for a target and records,
in one journal transaction, the alert and the decision (accepted, duplicate, resolved,
ignored, cooldown, rate_limited). It returns at once; accepted rollbacks go to a queue.

One worker takes rollbacks off the queue in order and ``execute``s each in a thread:
``started`` → plan (stored) → action → outcome (stored) → metrics and span. Rollbacks
run one at a time on purpose: two targets rolled back at once would make an incident
harder to read, and the cap per hour is about a handful.

On start the worker first resumes every rollback the journal holds unfinished, which is
how a crash or restart between the decision and the outcome loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics

from agent.rollback import actions
from agent.rollback.actions.base import FAILED, ActionError, Outcome
from agent.rollback.config import ControllerConfig
from agent.rollback.journal import DONE, Decision, Journal, Proposal, Rollback
from agent.rollback.payload import Alert, Notification
from agent.rollback.policy import Ignored, resolve
from agent.rollback.tracing import RollbackTracer

log = logging.getLogger("vigil.rollback")

ALERT_RESULTS = (
    "accepted",
    "duplicate",
    "resolved",
    "ignored",
    "cooldown",
    "rate_limited",
    "invalid",
)
# Crash on purpose at one of these points (VIGIL_ROLLBACK_FAILPOINT), so that recovery
# from a real crash can be tested: "before-action" is after the plan is journaled and
# before the action runs, "after-action" after it ran and before its outcome is journaled.
FAILPOINTS = ("before-action", "after-action")
FAILPOINT_EXIT = 86


# How often a controller without the leader lock looks again; the lock itself renews every
# 2 s (agent/kube_lease.py), so a shorter poll would only spin.
LEADER_POLL_S = 1.0


def reason_of(alert: Alert) -> str:
    summary = alert.annotations.get("summary", "")
    return f"{alert.name}: {summary}" if summary else alert.name


class Controller:
    def __init__(
        self,
        cfg: ControllerConfig,
        journal: Journal,
        tracer: RollbackTracer,
        tools: actions.Tools | None = None,
        registry: CollectorRegistry | None = None,
        failpoint: str | None = None,
        crash: Callable[[int], None] = os._exit,
        leader: Callable[[], bool] | None = None,
    ) -> None:
        self.cfg = cfg
        self.journal = journal
        self.tracer = tracer
        self.tools = tools or actions.Tools(journal)
        self.registry = registry or CollectorRegistry(auto_describe=True)
        # No `_created` series: Prometheus' text format would show each as a separate,
        # uncatalogued gauge family, and nothing here reads them.
        disable_created_metrics()
        self.failpoint = failpoint
        self._crash = crash
        # Where two controllers could run (a Deployment during a node failure), only the
        # holder of the leader lock acts; the other one journals and waits its turn.
        self._leader = leader
        self.rollbacks_total = Counter(
            "vigil_rollbacks",
            "Rollbacks executed, by target, action and result "
            "(succeeded, skipped, failed, dry_run).",
            ["target", "action", "result"],
            registry=self.registry,
        )
        self.alerts_total = Counter(
            "vigil_rollback_alerts",
            "Alerts received on the webhook, by what the controller made of them.",
            ["result"],
            registry=self.registry,
        )
        for result in ALERT_RESULTS:
            self.alerts_total.labels(result)
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    # --- receiving -------------------------------------------------------------------------

    def receive(self, notification: Notification) -> list[tuple[Alert, Decision]]:
        """Journals each alert with its decision (blocking: call it in a thread)."""
        out = []
        for alert in notification.alerts:
            resolved = resolve(alert.labels, self.cfg.rules, self.cfg.targets)
            proposal = None
            ignored = ""
            if isinstance(resolved, Ignored):
                ignored = resolved.reason
            else:
                proposal = Proposal(
                    target=resolved.target,
                    target_name=resolved.spec.name,
                    action=resolved.action,
                    params=resolved.params,
                    reason=reason_of(alert),
                )
            decision = self.journal.decide(
                alert,
                proposal,
                ignored=ignored,
                cooldown=self.cfg.cooldown,
                max_per_hour=self.cfg.max_per_hour,
                dry_run=self.cfg.dry_run,
            )
            self.alerts_total.labels(decision.result).inc()
            log.info(
                "alert",
                extra={
                    "alertname": alert.name,
                    "status": alert.status,
                    "fingerprint": alert.fingerprint,
                    "starts_at": alert.starts_at,
                    "result": decision.result,
                    "detail": decision.detail,
                },
            )
            out.append((alert, decision))
        return out

    def enqueue(self, rollback_id: int) -> None:
        self._queue.put_nowait(rollback_id)

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    # --- executing -------------------------------------------------------------------------

    def start(self) -> None:
        unfinished = self.journal.unfinished()
        for rb in unfinished:
            log.info("resuming rollback", extra={"rollback_id": rb.id, "state": rb.state})
            self.enqueue(rb.id)
        self._worker = asyncio.create_task(self._work(), name="vigil-rollback-worker")

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def _work(self) -> None:
        while True:
            rollback_id = await self._queue.get()
            await self._wait_for_leadership(rollback_id)
            try:
                # Shielded: a stop request waits for the rollback in hand to finish.
                await asyncio.shield(asyncio.to_thread(self.execute, rollback_id))
            except Exception:
                log.exception("rollback worker error", extra={"rollback_id": rollback_id})

    async def _wait_for_leadership(self, rollback_id: int) -> None:
        if self._leader is None or self._leader():
            return
        log.info("waiting for the leader lock before acting", extra={"rollback_id": rollback_id})
        while not self._leader():
            await asyncio.sleep(LEADER_POLL_S)

    def _fail(self, point: str) -> None:
        if self.failpoint == point:
            log.warning("failpoint: crashing on purpose", extra={"failpoint": point})
            logging.shutdown()
            self._crash(FAILPOINT_EXIT)

    def execute(self, rollback_id: int) -> Outcome | None:
        rb = self.journal.get(rollback_id)
        if rb is None or rb.state == DONE:
            return None  # queued twice (resumed and re-sent): done already
        with self.tracer.execution(
            rollback_id=rb.id,
            reason=rb.reason,
            target=rb.target,
            action=rb.action,
            dry_run=rb.dry_run,
            gpu_ids=actions.gpu_ids_of(rb.labels),
        ) as span:
            outcome = self._run(rb)
            self.tracer.set_result(span, outcome.result, outcome.detail)
        self.journal.finish(rb.id, outcome.result, outcome.detail)
        self.rollbacks_total.labels(rb.target, rb.action, outcome.result).inc()
        log.log(
            logging.WARNING if outcome.result == FAILED else logging.INFO,
            "rollback",
            extra={
                "rollback_id": rb.id,
                "target": rb.target,
                "action": rb.action,
                "result": outcome.result,
                "detail": outcome.detail,
                "attempt": rb.attempts + 1,
            },
        )
        return outcome

    def _run(self, rb: Rollback) -> Outcome:
        try:
            self.journal.mark_started(rb.id)
            action = actions.build(rb, self.tools)
            plan = rb.plan
            if plan is None:
                plan = action.plan()
                self.journal.set_plan(rb.id, plan)
            self._fail("before-action")
            outcome = action.apply(plan, dry_run=rb.dry_run)
            self._fail("after-action")
            return outcome
        except ActionError as exc:
            return Outcome(FAILED, str(exc))
        except Exception as exc:  # an action's bug must not stop the worker
            log.exception("rollback action crashed", extra={"rollback_id": rb.id})
            return Outcome(FAILED, f"unexpected error: {type(exc).__name__}: {exc}")
