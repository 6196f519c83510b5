"""CPU-side causes in a real `vigil run`: a CPU-starved workload (it shares a pinned CPU
with a hog), a CFS-throttled one (a cgroup with a small quota), then, once the starved pair
is gone, a GIL-bound one (three threads taking turns on the interpreter lock), and a
healthy control throughout, all watched by one agent. Each must be named with its own
cause and nothing else; the control must never show a cause once its verdict has
evidence."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agentproc import AgentProcess
from scenario import FAST, READY_S, causes, marker, settle, time_limit, workloads

pytestmark = [pytest.mark.bpf, pytest.mark.slow, pytest.mark.timeout(time_limit(settles=2))]

QUOTA_US, PERIOD_US = 10_000, 100_000  # 10 % of one CPU: a busy loop is throttled
PREFIX = "vigil-diag-"  # + the pid of the test process that made the group
# A killed process leaves its cgroup when the kernel has reaped it, which on a loaded
# machine can take a while: a bound, not the expected time.
REMOVE_S = 30.0


def _mounts() -> dict[str, str]:
    out = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            _dev, point, fstype, opts, *_ = line.split()
            if fstype == "cgroup2":
                out.setdefault("v2", point)
            elif fstype == "cgroup" and "cpu" in opts.split(","):
                out.setdefault("v1", point)
    return out


class Group:
    """A throwaway cgroup with a CPU quota: v2 (cpu.max) where the cpu controller can be
    enabled, else the v1 cpu controller (cpu.cfs_quota_us), which the collector reads too."""

    def __init__(self, name: str) -> None:
        mounts = _mounts()
        v2 = mounts.get("v2")
        if v2 and "cpu" in Path(v2, "cgroup.controllers").read_text().split():
            self.version, self.parent = 2, Path(v2)
            control = self.parent / "cgroup.subtree_control"
            if "cpu" not in control.read_text().split():
                control.write_text("+cpu")
        elif "v1" in mounts:
            self.version, self.parent = 1, Path(mounts["v1"])
        else:
            pytest.skip("no cgroup v2 cpu controller and no cgroup v1 cpu hierarchy here")
        self._remove_stale()
        self.path = self.parent / name
        self.path.mkdir()
        try:
            if self.version == 2:
                (self.path / "cpu.max").write_text(f"{QUOTA_US} {PERIOD_US}")
            else:
                (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (self.path / "cpu.cfs_quota_us").write_text(str(QUOTA_US))
        except BaseException:
            self.remove()
            raise

    def _remove_stale(self) -> None:
        """Groups left by a test process that is gone (killed before its cleanup ran):
        their workloads died with it, so the groups are empty and only take the name."""
        for path in self.parent.glob(f"{PREFIX}*"):
            owner = path.name.removeprefix(PREFIX)
            if owner.isdigit() and not _alive(int(owner)):
                # not empty after all, or another worker got there first: left alone
                with contextlib.suppress(OSError):
                    path.rmdir()

    def procs(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return []

    def remove(self) -> None:
        """Kills whatever is still in the group (only this test's workloads can be) and
        removes it; a group that stays is an error, not a silent leak of a CPU quota."""
        deadline = time.monotonic() + REMOVE_S
        while True:
            for pid in self.procs():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"cgroup {self.path} not removed after {REMOVE_S:.0f} s: {e}; "
                        f"still in it: {self.procs()}"
                    ) from e
                time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture
def group() -> Iterator[Group]:
    if os.geteuid() != 0:
        pytest.skip("creating a cgroup needs root")
    g = Group(f"{PREFIX}{os.getpid()}")
    try:
        yield g
    finally:
        g.remove()


def test_cpu_causes_each_named_alone_and_a_healthy_control_has_none(
    tmp_path: Path, group: Group
) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs: the starved workload and its hog share one")
    mark = marker()
    control_causes: list[Any] = []
    args = ["--watch", mark, "--state-dir", str(tmp_path / "state"), *FAST]
    with AgentProcess(args, ready_timeout=READY_S) as agent, workloads() as w:
        healthy = w.start("light", mark)
        throttled = w.start("busy", mark, cgroup=str(group.path))
        starved = w.start("busy", mark, cpu=0)
        hog = w.hog(cpu=0)

        def watch_control(pid: int, target: dict[str, Any]) -> None:
            if pid == healthy and target["causes"]:
                control_causes.append(target["causes"])

        expected = {healthy: set(), starved: {"cpu_starved"}, throttled: {"cpu_throttled"}}
        final = settle(agent, expected, seen=watch_control)
        # Threads fighting for the GIL need CPUs of their own to show as that and not as
        # a CPU shortage: the starved pair goes first.
        w.stop(starved, hog)
        gil = w.start("gil", mark)
        expected = {healthy: set(), throttled: {"cpu_throttled"}, gil: {"gil_bound"}}
        final |= settle(agent, expected, seen=watch_control)
    assert control_causes == [], f"the healthy control showed causes: {control_causes}"
    # What a person reads: the numbers behind each verdict.
    starved_cause = final[starved]["causes"][0]
    assert starved_cause["summary"].startswith("waited ")
    assert starved_cause["runbook"] == "docs/diagnosis.md#cpu_starved"
    assert final[throttled]["signals"]["cpu_throttled_ratio"] >= 0.25
    assert causes(final[healthy]) == set() and final[healthy]["status"] == "ok"
