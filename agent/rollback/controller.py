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

An outcome that cannot be journaled (the disk filled up after the action ran) is counted
in ``vigil_rollbacks_total`` at once — the action happened — and its journaling is retried
with a capped backoff until it lands; meanwhile ``vigil_rollback_outcomes_unrecorded`` is
1, ``/v1/rollbacks`` shows the outcome with ``"recorded": false`` and ``/readyz`` fails
with the journal's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics

from agent.rollback import actions, metrics
from agent.rollback.actions.base import FAILED, REFUSED, ActionError, Outcome, Refused
from agent.rollback.actions.command import label_env_problem
from agent.rollback.config import ControllerConfig
from agent.rollback.history import SpecHistory, history_targets
from agent.rollback.journal import DONE, Decision, Journal, JournalError, Proposal, Rollback
from agent.rollback.payload import Alert, Notification
from agent.rollback.policy import REFUSED as POLICY_REFUSED
from agent.rollback.policy import Ignored, Resolved, TargetSpec, recheck, resolve
from agent.rollback.tracing import RollbackTracer

log = logging.getLogger("vigil.rollback")

ALERT_RESULTS = (
    "accepted",
    "duplicate",
    "resolved",
    "ignored",
    "no_target",
    "refused",
    "cooldown",
    "rate_limited",
    "invalid",
)
# Crash on purpose at one of these points (VIGIL_ROLLBACK_FAILPOINT), so that recovery
# from a real crash can be tested: "before-action" is after the plan is journaled and
# before the action runs, "after-action" after it ran and before its outcome is journaled.
FAILPOINTS = ("before-action", "after-action")
FAILPOINT_EXIT = 86


# Retrying an outcome the journal could not take: soon at first (a transient error), then
# every 30 s (a full disk waits for a person; a tighter loop would only fill the log).
RECORD_RETRY_FIRST_S = 0.5
RECORD_RETRY_MAX_S = 30.0


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
        self.tools.cooldown = cfg.cooldown
        self.registry = registry or CollectorRegistry(auto_describe=True)
        # No `_created` series: Prometheus' text format would show each as a separate,
        # uncatalogued gauge family, and nothing here reads them.
        disable_created_metrics()
        self.failpoint = failpoint
        self._crash = crash
        # Where two controllers could run (a Deployment during a node failure), only the
        # holder of the leader lock acts; the other one journals and waits its turn.
        self._leader = leader
        # prometheus_client's Counter takes the exposed name and strips _total itself.
        rb, al, un = metrics.ROLLBACKS, metrics.ALERTS, metrics.OUTCOMES_UNRECORDED
        self.rollbacks_total = Counter(rb.name, rb.help, rb.labels, registry=self.registry)
        self.alerts_total = Counter(al.name, al.help, al.labels, registry=self.registry)
        for result in ALERT_RESULTS:
            self.alerts_total.labels(result)
        self.unrecorded = Gauge(un.name, un.help, un.labels, registry=self.registry)
        hr = metrics.HISTORY_REFUSED
        self.history_refused = Counter(hr.name, hr.help, hr.labels, registry=self.registry)
        # rollback id -> (outcome, the journal's last error), while the journal refuses it.
        self._pending: dict[int, tuple[Outcome, str]] = {}
        self._stopping = threading.Event()
        self.record_retry = (RECORD_RETRY_FIRST_S, RECORD_RETRY_MAX_S)
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    # --- receiving -------------------------------------------------------------------------

    def receive(self, notification: Notification) -> list[tuple[Alert, Decision]]:
        """Journals each alert with its decision (blocking: call it in a thread)."""
        out = []
        for alert in notification.alerts:
            resolved = self._resolve(alert)
            proposal = None
            ignored, ignored_result = "", "ignored"
            if isinstance(resolved, Ignored):
                ignored, ignored_result = resolved.reason, resolved.result
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
                ignored_result=ignored_result,
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

    def _resolve(self, alert: Alert) -> Resolved | Ignored:
        resolved = resolve(alert.labels, self.cfg.rules, self.cfg.targets)
        if isinstance(resolved, Resolved) and resolved.action == "command":
            # Checked here, not only when the command is built, so that the refusal is
            # journaled and answered with the alert instead of failing later.
            problem = label_env_problem(alert.labels, {"VIGIL_ROLLBACK_REASON": reason_of(alert)})
            if problem:
                return Ignored(f"target {resolved.spec.name}: {problem}", POLICY_REFUSED)
        return resolved

    def enqueue(self, rollback_id: int) -> None:
        self._queue.put_nowait(rollback_id)

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    # --- executing -------------------------------------------------------------------------

    def start(self) -> None:
        try:
            unfinished = self.journal.unfinished()
        except JournalError as exc:
            # Not ready (/readyz says why); new alerts are still tried as they come.
            log.error("cannot resume unfinished rollbacks", extra={"error": str(exc)})
            unfinished = []
        for rb in unfinished:
            log.info("resuming rollback", extra={"rollback_id": rb.id, "state": rb.state})
            self.enqueue(rb.id)
        self._worker = asyncio.create_task(self._work(), name="vigil-rollback-worker")
        targets = history_targets(self.cfg.targets)
        if targets:
            history = SpecHistory(
                targets, self.journal, self.tools.kube_client, self.history_refused.inc
            )
            threading.Thread(
                target=history.run, args=(self._stopping,), name="vigil-spec-history", daemon=True
            ).start()

    async def stop(self) -> None:
        self._stopping.set()
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
        # Counted when the action is done, whether or not the journal takes the outcome.
        self.rollbacks_total.labels(rb.target, rb.action, outcome.result).inc()
        self._record(rb, outcome)
        log.log(
            logging.WARNING if outcome.result in (FAILED, REFUSED) else logging.INFO,
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

    def _record(self, rb: Rollback, outcome: Outcome) -> None:
        """Journals the outcome, retrying with a capped backoff until the journal takes it
        or the controller stops (then the row stays ``started`` and is resumed on start,
        where the action's plan check finds the work done)."""
        delay, cap = self.record_retry
        while True:
            try:
                self.journal.finish(rb.id, outcome.result, outcome.detail)
            except JournalError as exc:
                if rb.id not in self._pending:
                    log.error(
                        "cannot journal the outcome of a rollback; retrying",
                        extra={"rollback_id": rb.id, "result": outcome.result, "error": str(exc)},
                    )
                self._pending[rb.id] = (outcome, str(exc))
                self.unrecorded.set(len(self._pending))
                if self._stopping.wait(delay):
                    return
                delay = min(delay * 2, cap)
                continue
            if self._pending.pop(rb.id, None) is not None:
                log.info("outcome journaled", extra={"rollback_id": rb.id})
            self.unrecorded.set(len(self._pending))
            return

    def unrecorded_outcomes(self) -> dict[int, dict[str, Any]]:
        """Outcomes done but not journaled yet, for /v1/rollbacks and /readyz."""
        return {
            rid: {"result": o.result, "detail": o.detail, "journal_error": err}
            for rid, (o, err) in list(self._pending.items())
        }

    def _target_now(self, rb: Rollback) -> TargetSpec:
        """The rollback's target as the running configuration has it. A row decided under
        an older configuration (queued, or resumed after a restart) acts only if its target
        is still configured the same way, and within today's limits (allowed_namespaces),
        never those it was decided under."""
        spec = self.cfg.targets.get(rb.target_name)
        if spec is not None and spec.action != rb.action:
            spec = None
        problem = recheck(spec, rb.labels, rb.params)
        if problem:
            raise Refused(f"target {rb.target_name!r} {problem}; nothing done")
        assert spec is not None
        return spec

    def _run(self, rb: Rollback) -> Outcome:
        try:
            self.journal.mark_started(rb.id)
            action = actions.build(rb, self.tools, self._target_now(rb))
            plan = rb.plan
            if plan is None:
                plan = action.plan()
                self.journal.set_plan(rb.id, plan)
            self._fail("before-action")
            outcome = action.apply(plan, dry_run=rb.dry_run)
            self._fail("after-action")
            return outcome
        except Refused as exc:
            return Outcome(REFUSED, str(exc))
        except (ActionError, JournalError) as exc:
            return Outcome(FAILED, str(exc))
        except Exception as exc:  # an action's bug must not stop the worker
            log.exception("rollback action crashed", extra={"rollback_id": rb.id})
            return Outcome(FAILED, f"unexpected error: {type(exc).__name__}: {exc}")
