"""A leader lock on a Kubernetes Lease, so that two rollback controllers never act at once.

Source: ``coordination.k8s.io/v1`` Lease ``<namespace>/<name>`` (one GET and one PUT every
``retry_period``, 2 s; a POST the first time). Cost: negligible. Privilege: RBAC create on
leases and get, update on this Lease (deploy/rollback-rbac.yaml). Semantics follow
client-go's leader election: the Lease's times are written but never compared with this
host's clock; a holder is considered gone only after its record has been seen unchanged for
the lease duration.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from agent.kube import core_api
from agent.loop import Loop

log = logging.getLogger("vigil.kube")

# --- the lock --------------------------------------------------------------------------

# client-go's defaults for leader election: a holder that has not renewed for 15 s is gone;
# a holder stops acting 10 s after its last renewal (5 s before anyone may take over); tries
# every 2 s.
LEASE_DURATION_S = 15.0
RENEW_DEADLINE_S = 10.0
RETRY_PERIOD_S = 2.0


def _micro_time(wall: float) -> str:
    """RFC 3339 with microseconds, the form of a Lease's MicroTime fields."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall))
    return f"{stamp}.{int(wall % 1 * 1e6):06d}Z"


class LeaseLock:
    """A leader lock on a ``coordination.k8s.io/v1`` Lease, as client-go's leader election.

    :meth:`held` is True while this process may act: it renewed the Lease less than
    ``renew_deadline`` ago. Another process takes the Lease over only after it has seen the
    same holder and renewal time unchanged for ``lease_duration`` by its own clock, so clocks
    need not agree, and ``renew_deadline < lease_duration`` leaves a gap in which nobody acts.
    Writes carry the resourceVersion read, so two contenders never both win (409 Conflict).
    Needs RBAC get, update (on this Lease) and create (leases) in ``namespace``.
    """

    def __init__(
        self,
        api: Any,  # kubernetes.client.CoordinationV1Api
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float = LEASE_DURATION_S,
        renew_deadline: float = RENEW_DEADLINE_S,
        retry_period: float = RETRY_PERIOD_S,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < renew_deadline < lease_duration:
            raise ValueError("renew_deadline must be positive and shorter than lease_duration")
        self.api, self.namespace, self.name, self.identity = api, namespace, name, identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._clock, self._wall = clock, wall
        self._renewed_at: float | None = None  # our clock, at our last successful write
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        # API down: the round fails (logged once a minute) and the lock lapses once the
        # renew deadline passes; the next round comes retry_period later all the same.
        self._loop = Loop(
            "lease",
            self._round,
            retry_period,
            logger=log,
            message="cannot renew the leader lock",
            fields={"lease": name},
            level=logging.WARNING,
            traceback=False,
        )

    def held(self) -> bool:
        at = self._renewed_at
        return at is not None and self._clock() - at < self.renew_deadline

    def try_acquire_or_renew(self) -> bool:
        """One round: read the Lease, then create, renew or take it over when allowed."""
        from kubernetes.client.exceptions import ApiException

        now_wall = self._wall()
        try:
            resp = self.api.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=10
            )
            lease = json.loads(resp.data)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = self._body(None, now_wall, transitions=0, acquired=True)
            try:
                self.api.create_namespaced_lease(self.namespace, body, _request_timeout=10)
            except ApiException as create_exc:
                if create_exc.status == 409:  # another contender created it first
                    return False
                raise
            self._won()
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, str(spec.get("renewTime") or ""))
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        expired = self._clock() - self._observed_at >= duration
        if holder and holder != self.identity and not expired:
            self._renewed_at = None
            return False
        ours = holder == self.identity
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)
        body = self._body(lease, now_wall, transitions=transitions, acquired=not ours)
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, body, _request_timeout=10)
        except ApiException as exc:
            if exc.status == 409:  # changed since we read it: someone else moved first
                self._renewed_at = None
                return False
            raise
        if not ours:
            log.info("leader lock taken", extra={"lease": self.name, "from": holder or "-"})
        self._won()
        return True

    def _won(self) -> None:
        self._renewed_at = self._clock()

    def _body(
        self, current: dict[str, Any] | None, now_wall: float, *, transitions: int, acquired: bool
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        spec: dict[str, Any] = dict((current or {}).get("spec") or {})
        if current is not None:
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=int(self.lease_duration),
            renewTime=_micro_time(now_wall),
            leaseTransitions=transitions,
        )
        if acquired:
            spec["acquireTime"] = _micro_time(now_wall)
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": spec,
        }

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._loop.start()

    def _round(self) -> None:
        was = self.held()
        try:
            self.try_acquire_or_renew()
        finally:
            if was and not self.held():
                log.warning("leader lock lost", extra={"lease": self.name})

    def close(self, release: bool = True) -> None:
        """Stops renewing; with ``release``, hands the Lease over at once (as client-go's
        ReleaseOnCancel) instead of making the next holder wait out the duration."""
        self._loop.stop(timeout=self.retry_period + 1)
        if release and self.held():
            try:
                resp = self.api.read_namespaced_lease(
                    self.name, self.namespace, _preload_content=False, _request_timeout=5
                )
                lease = json.loads(resp.data)
                if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                    lease["spec"].update(holderIdentity="", leaseDurationSeconds=1)
                    self.api.replace_namespaced_lease(
                        self.name, self.namespace, lease, _request_timeout=5
                    )
            except Exception as exc:  # the next holder then waits out the lease instead
                log.warning("could not release the leader lock", extra={"error": str(exc)})
        self._renewed_at = None


def lease_lock(name: str, namespace: str, identity: str, kubeconfig: str = "") -> LeaseLock:
    """A :class:`LeaseLock` with in-cluster credentials (or ``kubeconfig``)."""
    from kubernetes import client

    api_client = core_api(kubeconfig).api_client
    return LeaseLock(client.CoordinationV1Api(api_client), namespace, name, identity)
