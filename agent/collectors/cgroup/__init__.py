"""CFS bandwidth throttling of each watched process's cgroup, from ``cpu.stat``.

Measures, per watched process (the series of the processes in one cgroup carry that
cgroup's numbers): CFS periods, throttled periods and throttled time — the share of
periods in which the group ran out of its ``cpu.max`` quota (a Kubernetes CPU limit) and
its threads were held back although runnable. Source: ``<cgroup>/cpu.stat`` (v2:
``nr_periods``, ``nr_throttled``, ``throttled_usec``; v1 cpu controller: ``throttled_time``
in ns), the cgroup found from ``<procfs>/<pid>/cgroup``. Cost: one small file read per
watched cgroup per interval. Privilege: none beyond reading /proc/<pid>/cgroup and
cgroupfs (world-readable); inside a pod the host's cgroupfs must be visible (hostPID and
the host cgroup namespace, as the DaemonSet has).
"""

from __future__ import annotations

from agent.collectors.cgroup.collector import factory
from agent.collectors.cgroup.doctor import doctor
from agent.collectors.cgroup.metrics import METRICS
from agent.collectors.cgroup.settings import CgroupSettings
from agent.registry import CollectorSpec

SPEC = CollectorSpec(
    name="cgroup",
    help="CFS throttling of the watched processes' cgroups from cpu.stat",
    settings=CgroupSettings,
    factory=factory,
    doctor=doctor,
    metrics=METRICS,
)
