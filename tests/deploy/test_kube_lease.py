"""The rollback controller's leader lock: two contenders on one Lease of a local API server,
through the real Kubernetes client; never both leaders, a successor once the holder is gone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakekube import FakeKubeAPI
from kubernetes import client, config

from agent.kube_lease import LeaseLock

NS, NAME = "vigil", "vigil-rollback-controller"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[FakeKubeAPI, client.CoordinationV1Api]]:
    with FakeKubeAPI() as server:
        api_client = config.new_client_from_config(
            config_file=str(server.kubeconfig(tmp_path / "kc"))
        )
        yield server, client.CoordinationV1Api(api_client)


def pair(coord: client.CoordinationV1Api, clock: Clock) -> tuple[LeaseLock, LeaseLock]:
    def lock(who: str) -> LeaseLock:
        return LeaseLock(coord, NS, NAME, who, lease_duration=15, renew_deadline=10, clock=clock)

    return lock("pod-a"), lock("pod-b")


def test_first_contender_creates_and_holds_the_lease(api) -> None:  # type: ignore[no-untyped-def]
    server, coord = api
    clock = Clock()
    a, b = pair(coord, clock)
    assert a.try_acquire_or_renew() and a.held()
    assert not b.try_acquire_or_renew() and not b.held()
    lease = server.leases[(NS, NAME)]
    assert lease["spec"]["holderIdentity"] == "pod-a"
    assert lease["spec"]["leaseDurationSeconds"] == 15
    # Renewing keeps it; the other still cannot take it while renewals go on.
    for _ in range(5):
        clock.t += 5
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew()
    assert server.leases[(NS, NAME)]["spec"]["leaseTransitions"] == 0


def test_holder_stops_acting_before_anyone_may_take_over(api) -> None:  # type: ignore[no-untyped-def]
    _, coord = api
    clock = Clock()
    a, b = pair(coord, clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # b starts watching the record now
    clock.t += 10  # a could not renew (API down, partition): it stops acting...
    assert not a.held()
    assert not b.try_acquire_or_renew()  # ...and b still waits: nobody acts in between
    clock.t += 5
    assert b.try_acquire_or_renew() and b.held()
    assert not a.try_acquire_or_renew() and not a.held()  # a comes back: b keeps it


def test_takeover_counts_a_transition(api) -> None:  # type: ignore[no-untyped-def]
    server, coord = api
    clock = Clock()
    a, b = pair(coord, clock)
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    clock.t += 16
    assert b.try_acquire_or_renew()
    spec = server.leases[(NS, NAME)]["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("pod-b", 1)


def test_a_write_based_on_a_stale_read_loses(api) -> None:  # type: ignore[no-untyped-def]
    server, coord = api
    clock = Clock()
    a, b = pair(coord, clock)
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    clock.t += 16
    # b decides to take over; a renews in between (as if its write raced b's read).
    real_read = coord.read_namespaced_lease

    def read_then_a_renews(*args, **kw):  # type: ignore[no-untyped-def]
        resp = real_read(*args, **kw)
        coord.read_namespaced_lease = real_read
        assert a.try_acquire_or_renew()
        return resp

    coord.read_namespaced_lease = read_then_a_renews
    assert not b.try_acquire_or_renew() and not b.held()
    assert server.leases[(NS, NAME)]["spec"]["holderIdentity"] == "pod-a"


def test_release_hands_over_without_waiting(api) -> None:  # type: ignore[no-untyped-def]
    _, coord = api
    clock = Clock()
    a, b = pair(coord, clock)
    a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    a.close(release=True)
    assert not a.held()
    clock.t += 1  # the released lease lasts 1 s
    assert b.try_acquire_or_renew() and b.held()


def test_api_down_means_not_leader_after_the_deadline(api) -> None:  # type: ignore[no-untyped-def]
    server, coord = api
    clock = Clock()
    a, _ = pair(coord, clock)
    a.try_acquire_or_renew()
    server.down = True
    with pytest.raises(Exception):  # noqa: B017 - the background loop logs whatever it is
        a.try_acquire_or_renew()
    assert a.held()
    clock.t += 10
    assert not a.held()


def test_background_loop_acquires(api) -> None:  # type: ignore[no-untyped-def]
    _, coord = api
    lock = LeaseLock(coord, NS, NAME, "pod-a", retry_period=0.05)
    lock.start()
    try:
        import time

        deadline = time.monotonic() + 5
        while not lock.held() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lock.held()
    finally:
        lock.close()
    assert not lock.held()
