"""CPU scheduling of watched processes from eBPF scheduler tracepoints.

Measures, per watched process (merged per pod/container/comm where a pod is known):
run-queue latency and off-CPU time (histograms), voluntary / involuntary context
switches and CPU migrations (counters). With ``--collector.sched.mode=cgroup`` the same
is measured for every task on the host, aggregated per cgroup.

Source: probes/sched.bpf.c on the scheduler tracepoints (sched_switch, sched_wakeup,
sched_wakeup_new, sched_migrate_task, sched_process_fork, sched_process_exit), loaded by
bcc; aggregation happens in the kernel, this package reads the maps every ``interval``.
The kernel's thread filter is seeded from ``<procfs>/<pid>/task`` when discovery adds a
process and follows forks and exits by itself.

Cost: one inlined array lookup per scheduler event for an unwatched task; on a pinned
context-switch storm, attaching costs what empty programs cost and watching the storm
costs less than bcc's runqlat (bench/sched_overhead, bench/RESULTS.md, docs/sched.md).
Privilege: CAP_BPF + CAP_PERFMON, or root; where more is needed (CAP_SYS_ADMIN,
CAP_SYS_RESOURCE) the preflight says so (agent/collectors/sched/preflight.py,
docs/compatibility.md).
"""

from __future__ import annotations

from agent.collectors.sched.collector import factory
from agent.collectors.sched.doctor import doctor
from agent.collectors.sched.metrics import METRICS
from agent.collectors.sched.settings import SchedSettings
from agent.registry import CollectorSpec

SPEC = CollectorSpec(
    name="sched",
    help="CPU scheduling of watched processes from eBPF scheduler tracepoints",
    settings=SchedSettings,
    factory=factory,
    doctor=doctor,
    metrics=METRICS,
)
