"""`vigil doctor` checks for the cgroup collector: a cpu hierarchy to read cpu.stat in."""

from __future__ import annotations

from agent.collectors.cgroup.collector import find_mounts
from agent.collectors.cgroup.cpustat import CpuStatError, parse_cpu_stat, stat_file
from agent.collectors.cgroup.settings import CgroupSettings
from agent.registry import Check, CollectorNotApplicable, Paths


def doctor(settings: CgroupSettings, paths: Paths) -> list[Check]:
    try:
        mounts = find_mounts(paths.procfs, settings.root)
    except CollectorNotApplicable as exc:
        return [Check("cgroup cpu hierarchy", True, f"not applicable: {exc.reason}", exc.fix)]
    checks = []
    for version, mount in sorted(mounts.items()):
        try:
            with open(stat_file(mount, "/")) as f:
                parse_cpu_stat(f.read(), version)
            checks.append(Check(f"cgroup v{version} cpu.stat", True, f"readable under {mount}"))
        except FileNotFoundError:
            # The root cgroup has no cpu.stat throttling keys on some kernels; the
            # processes' own groups are what is read.
            checks.append(Check(f"cgroup v{version} hierarchy", True, f"mounted at {mount}"))
        except (OSError, CpuStatError) as exc:
            checks.append(
                Check(
                    f"cgroup v{version} cpu.stat",
                    True,
                    f"{mount}: {exc}; throttling is read from each process's own group",
                )
            )
    return checks
