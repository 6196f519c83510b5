"""cpu.stat, /proc/<pid>/cgroup and mount-table parsing (pure), and the collector over a
fixture tree of real-shaped files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from agent.collectors.cgroup.collector import CgroupCollector, find_mounts
from agent.collectors.cgroup.cpustat import (
    CgroupPath,
    CpuStat,
    CpuStatError,
    cgroup_mounts,
    cpu_cgroup,
    host_path,
    in_namespace,
    parse_cpu_stat,
    stat_file,
)
from agent.discovery import ProcessInfo
from agent.registry import CollectorNotApplicable

V2 = """usage_usec 8472931
user_usec 7012340
system_usec 1460591
core_sched.force_idle_usec 0
nr_periods 1200
nr_throttled 960
throttled_usec 42500000
nr_bursts 0
burst_usec 0
"""
V1 = "nr_periods 50\nnr_throttled 10\nthrottled_time 2500000000\nnr_bursts 0\nburst_time 0\n"


def test_v2_counts_microseconds() -> None:
    assert parse_cpu_stat(V2, 2) == CpuStat(1200, 960, 42.5)


def test_v1_counts_nanoseconds() -> None:
    assert parse_cpu_stat(V1, 1) == CpuStat(50, 10, 2.5)


def test_v2_group_without_the_cpu_controller_is_never_throttled() -> None:
    text = "usage_usec 10\nuser_usec 5\nsystem_usec 5\n"
    stat = parse_cpu_stat(text, 2)
    assert stat == CpuStat(0, 0, 0.0, bandwidth=False)


@pytest.mark.parametrize(
    ("text", "version", "why"),
    [
        ("nr_periods 1\nnr_throttled 0\n", 2, "throttled_usec"),
        ("usage_usec 1\nnr_periods 1\n", 2, "nr_throttled"),
        ("nr_periods 1\nnr_throttled 0\nthrottled_usec 5\n", 1, "throttled_time"),
        ("", 1, "nr_periods"),
        ("nr_periods x\n", 2, "not an integer"),
        ("nr_periods 1 2\n", 2, "not 'key value'"),
        ("nr_periods -1\nnr_throttled 0\nthrottled_usec 0\n", 2, "negative"),
        (V2, 3, "not 1 or 2"),
    ],
)
def test_unusable_cpu_stat_is_an_error_that_says_why(text: str, version: int, why: str) -> None:
    with pytest.raises(CpuStatError, match=why):
        parse_cpu_stat(text, version)


def test_blank_lines_and_unknown_keys_are_ignored() -> None:
    text = "\nnr_periods 3\n\nnew_key 7\nnr_throttled 1\nthrottled_usec 1000\n"
    assert parse_cpu_stat(text, 2) == CpuStat(3, 1, 0.001)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (
            "0::/kubepods.slice/pod1/cri-abc.scope\n",
            CgroupPath(2, "/kubepods.slice/pod1/cri-abc.scope"),
        ),
        ("0::/\n", CgroupPath(2, "/")),
        # hybrid: the cpu controller is in v1 and wins over the unified line
        ("12:cpu,cpuacct:/docker/abc\n0::/docker/abc\n", CgroupPath(1, "/docker/abc")),
        ("4:memory:/x\n1:cpu:/\n0::/\n", CgroupPath(1, "/")),
        ("4:memory:/x\n2:cpuacct:/y\n", None),  # cpuacct is not cpu
        ("", None),
        ("garbage\n", None),
    ],
)
def test_the_cpu_cgroup_of_a_process(text: str, want: CgroupPath | None) -> None:
    assert cpu_cgroup(text) == want


def test_mount_table() -> None:
    text = (
        "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n"
        "cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n"
        "cgroup /sys/fs/cgroup/cpuacct cgroup rw,cpuacct 0 0\n"
        "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"
    )
    assert cgroup_mounts(text) == {1: "/sys/fs/cgroup/cpu", 2: "/sys/fs/cgroup/unified"}
    assert cgroup_mounts("cgroup2 /sys/fs/my\\040cg cgroup2 rw 0 0\n") == {2: "/sys/fs/my cg"}
    assert cgroup_mounts("short line\n") == {}


def test_stat_file_paths() -> None:
    assert stat_file("/sys/fs/cgroup", "/") == "/sys/fs/cgroup/cpu.stat"
    assert stat_file("/sys/fs/cgroup/", "/a/b") == "/sys/fs/cgroup/a/b/cpu.stat"
    with pytest.raises(CpuStatError, match=r"\.\."):
        stat_file("/sys/fs/cgroup", "/a/../../etc")


class FakeDiscovery:
    def __init__(self, procs: Mapping[int, ProcessInfo]) -> None:
        self.procs = procs

    def snapshot(self) -> Mapping[int, ProcessInfo]:
        return self.procs


def tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def samples(collector: CgroupCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in collector.collect():
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(got: Mapping[Any, float], name: str, **labels: str) -> float | None:
    for (n, lab), v in got.items():
        if n == name and all(dict(lab).get(k) == w for k, w in labels.items()):
            return v
    return None


def test_collector_reads_each_cgroup_once_and_labels_each_process(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "proc/self/mounts": f"cgroup2 {tmp_path}/cg cgroup2 rw 0 0\n",
            "proc/10/cgroup": "0::/app.slice/a\n",
            "proc/11/cgroup": "0::/app.slice/a\n",
            "proc/12/cgroup": "0::/app.slice/b\n",
            "proc/13/cgroup": "0::/gone\n",
            "cg/app.slice/a/cpu.stat": V2,
            "cg/app.slice/b/cpu.stat": "usage_usec 5\n",
        },
    )
    procs = {
        pid: ProcessInfo(pid, f"w{pid}", "python w", start_time=pid) for pid in (10, 11, 12, 13)
    }
    reads: list[str] = []

    def read(path: str) -> str:
        reads.append(path)
        return Path(path).read_text()

    c = CgroupCollector(FakeDiscovery(procs), procfs=str(root / "proc"), read=read)  # type: ignore[arg-type]
    c.open()
    c.refresh_now()
    got = samples(c)
    assert value(got, "vigil_cgroup_cpu_throttled_periods_total", pid="10") == 960
    assert value(got, "vigil_cgroup_cpu_throttled_periods_total", pid="11") == 960
    assert value(got, "vigil_cgroup_cpu_throttled_seconds_total", pid="11") == 42.5
    assert value(got, "vigil_cgroup_cpu_periods_total", pid="12") == 0
    assert value(got, "vigil_cgroup_cpu_periods_total", pid="13") is None
    assert value(got, "vigil_cgroup_read_errors_total", reason="unreadable") == 1
    assert reads.count(f"{root}/cg/app.slice/a/cpu.stat") == 1
    # a process moved to another cgroup is followed at the next refresh
    (root / "proc/12/cgroup").write_text("0::/app.slice/a\n")
    c.refresh_now()
    assert value(samples(c), "vigil_cgroup_cpu_throttled_periods_total", pid="12") == 960


def test_no_cpu_hierarchy_is_not_applicable(tmp_path: Path) -> None:
    root = tree(tmp_path, {"proc/self/mounts": "proc /proc proc rw 0 0\n"})
    with pytest.raises(CollectorNotApplicable, match="no cgroup2 mount"):
        find_mounts(str(root / "proc"), "")
    assert find_mounts(str(root / "proc"), "/somewhere") == {2: "/somewhere"}


@pytest.mark.parametrize(
    ("root", "path", "want"),
    [
        (
            "/kubepods/besteffort/podA/ctrB",
            "/../../../burstable/podC/ctrD",
            "/kubepods/burstable/podC/ctrD",
        ),
        ("/kubepods/besteffort/podA/ctrB", "/../../../../system.slice", "/system.slice"),
        ("/", "/a/b", "/a/b"),
        ("/x", "/../../../../../../etc", "/etc"),  # cannot climb above the hierarchy
    ],
)
def test_paths_outside_the_namespace_become_host_paths(root: str, path: str, want: str) -> None:
    assert in_namespace(path) is False or root == "/"
    assert host_path(root, path) == want


def test_a_host_process_seen_from_a_private_cgroup_namespace(tmp_path: Path) -> None:
    # The host's tree is mounted at cg/; the agent's own namespace shows only its subtree,
    # which is the same directory (same inode) as cg/kubepods/podA/ctrB.
    root = tree(
        tmp_path,
        {
            "cg/kubepods/podA/ctrB/cpu.stat": "usage_usec 1\n",
            "cg/kubepods/podC/ctrD/cpu.stat": V2,
            "proc/20/cgroup": "0::/../../podC/ctrD\n",
            "proc/21/cgroup": "0::/../../../../../escape\n",
        },
    )
    own = root / "own"
    own.symlink_to(root / "cg/kubepods/podA/ctrB")
    (root / "proc/self").mkdir()
    (root / "proc/self/mounts").write_text(f"cgroup2 {own} cgroup2 rw 0 0\n")
    procs = {pid: ProcessInfo(pid, "python3", "python", start_time=1) for pid in (20, 21)}
    c = CgroupCollector(
        FakeDiscovery(procs),  # type: ignore[arg-type]
        procfs=str(root / "proc"),
        root=str(root / "cg"),
    )
    c.open()
    c.refresh_now()
    got = samples(c)
    assert value(got, "vigil_cgroup_cpu_throttled_periods_total", pid="20") == 960
    assert value(got, "vigil_cgroup_cpu_periods_total", pid="21") is None
    assert value(got, "vigil_cgroup_read_errors_total", reason="unreadable") == 1


def test_without_a_root_the_host_hierarchy_is_found_through_pid_1(tmp_path: Path) -> None:
    # In a DaemonSet (host PID namespace, private cgroup namespace) the host's tree is
    # /proc/1/root/<PID 1's cgroup mount>.
    host = "proc/1/root/sys/fs/cgroup"
    root = tree(
        tmp_path,
        {
            f"{host}/kubepods/podA/ctrB/cpu.stat": "usage_usec 1\n",
            f"{host}/kubepods/podC/ctrD/cpu.stat": V2,
            "proc/1/mounts": "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n",
            "proc/20/cgroup": "0::/../../podC/ctrD\n",
            "proc/22/cgroup": "0::/\n",  # the agent's own container: inside its namespace
        },
    )
    own = root / "own"
    own.symlink_to(root / host / "kubepods/podA/ctrB")
    (root / "proc/self").mkdir()
    (root / "proc/self/mounts").write_text(f"cgroup2 {own} cgroup2 rw 0 0\n")
    procs = {pid: ProcessInfo(pid, "python3", "python", start_time=1) for pid in (20, 22)}
    c = CgroupCollector(FakeDiscovery(procs), procfs=str(root / "proc"))  # type: ignore[arg-type]
    c.open()
    c.refresh_now()
    got = samples(c)
    assert value(got, "vigil_cgroup_cpu_throttled_periods_total", pid="20") == 960
    assert value(got, "vigil_cgroup_cpu_periods_total", pid="22") == 0
