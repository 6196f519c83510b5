"""Pure parts of the sched collector: buckets, merging, parsing, and its bookkeeping.

The bookkeeping tests drive the collector with an in-memory stand-in for the kernel maps
(the real probe is exercised in test_sched_bpf.py) over a fixture /proc tree.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from agent.collectors.sched.cgroup import CgroupNames, cgroup2_mount, cgroup_labels
from agent.collectors.sched.collector import (
    FIRST_SLOT,
    TOP_SLOT,
    SchedCollector,
    log2_buckets,
    merge_series,
)
from agent.collectors.sched.probe import SLOTS, GroupStats, parse_format_fields
from agent.discovery import ProcessInfo
from agent.registry import Check, CollectorUnavailable

# --- log2 slots → cumulative buckets ----------------------------------------------------


def test_bucket_bounds_are_powers_of_two_microseconds() -> None:
    les = [le for le, _ in log2_buckets([0] * SLOTS)]
    assert les[0] == "2e-06"
    assert les[13] == "0.016384"  # slot 14: the 8.2-16.4 ms bucket
    assert les[-2] == "67.108864"  # 2^26 us
    assert les[-1] == "+Inf"
    assert len(les) == TOP_SLOT - FIRST_SLOT + 2
    assert [float(le) for le in les[:-1]] == [2.0**k * 1e-6 for k in range(1, TOP_SLOT + 1)]


@pytest.mark.parametrize("slot", range(SLOTS))
def test_one_sample_in_each_slot(slot: int) -> None:
    slots = [0] * SLOTS
    slots[slot] = 3
    buckets = log2_buckets(slots)
    for k, (_, value) in zip(range(FIRST_SLOT, TOP_SLOT + 1), buckets, strict=False):
        # Below the first bucket folds into it; above the top counts in +Inf only.
        assert value == (3.0 if slot <= k else 0.0), (slot, k)
    assert buckets[-1] == ("+Inf", 3.0)


def test_gaps_are_filled_with_the_running_total() -> None:
    slots = [0] * SLOTS
    slots[3], slots[10] = 5, 2
    values = [v for _, v in log2_buckets(slots)]
    assert values[:2] == [0.0, 0.0]  # le 2 us, 4 us
    assert values[2:9] == [5.0] * 7  # le 8 us .. 512 us
    assert values[9:-1] == [7.0] * (TOP_SLOT - 9)
    assert values[-1] == 7.0


def test_short_slot_lists_and_custom_units() -> None:
    assert log2_buckets([1, 1], unit=1.0, first=0, top=3) == [
        ("1.0", 1.0),
        ("2.0", 2.0),
        ("4.0", 2.0),
        ("8.0", 2.0),
        ("+Inf", 2.0),
    ]
    assert log2_buckets([], top=2) == [("2e-06", 0.0), ("4e-06", 0.0), ("+Inf", 0.0)]
    with pytest.raises(ValueError):
        log2_buckets([1], first=5, top=4)


@given(st.lists(st.integers(min_value=0, max_value=2**40), min_size=SLOTS, max_size=SLOTS))
def test_buckets_are_cumulative_and_end_with_the_total(slots: list[int]) -> None:
    values = [v for _, v in log2_buckets(slots)]
    assert values == sorted(values)
    assert values[-1] == float(sum(slots))
    for i, k in enumerate(range(FIRST_SLOT, TOP_SLOT + 1)):
        assert values[i] == float(sum(slots[: k + 1]))


# --- merging ---------------------------------------------------------------------------


def stats(vol: int = 0, runq_ns: int = 0, slot: int | None = None) -> GroupStats:
    s = GroupStats(voluntary=vol, runq_ns=runq_ns)
    if slot is not None:
        s.runq_slots[slot] = 1
    return s


def test_merge_sums_groups_sharing_labels_and_skips_unlabelled() -> None:
    pod = ("web-1", "ns", "server", "python", "")
    merged = merge_series(
        {1: stats(2, 10, 4), 2: stats(3, 5, 4), 3: stats(7)},
        {1: pod, 2: pod},
        {},
    )
    assert list(merged) == [pod]
    assert merged[pod].voluntary == 5
    assert merged[pod].runq_ns == 15
    assert merged[pod].runq_slots[4] == 2


def test_retired_totals_count_only_while_their_series_lives() -> None:
    pod = ("web-1", "ns", "server", "python", "")
    gone = ("web-2", "ns", "server", "python", "")
    merged = merge_series({1: stats(2)}, {1: pod}, {pod: stats(10), gone: stats(99)})
    assert merged == {pod: stats(12)}


# --- parsing ---------------------------------------------------------------------------

SWITCH_FORMAT = """name: sched_switch
ID: 316
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;
\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;

print fmt: "prev_comm=%s prev_pid=%d", REC->prev_comm, REC->prev_pid
"""


def test_format_fields() -> None:
    assert parse_format_fields(SWITCH_FORMAT) == {
        "common_type",
        "common_pid",
        "prev_comm",
        "prev_pid",
        "prev_state",
        "child_comm",
    }
    assert parse_format_fields("") == set()


def test_cgroup2_mount_and_labels() -> None:
    mounts = (
        "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n"
        "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n"
    )
    assert cgroup2_mount(mounts) == "/sys/fs/cgroup/unified"
    assert cgroup2_mount("proc /proc proc rw 0 0\n") is None
    uid = "0f0e2a5c-1234-4abc-8def-0123456789ab"
    cid = "a" * 64
    path = f"/kubepods.slice/kubepods-pod{uid.replace('-', '_')}.slice/cri-containerd-{cid}.scope"
    assert cgroup_labels(path) == (uid, "", cid[:12], path)

    class Resolver:
        def lookup(self, pod_uid: str) -> tuple[str, str, Mapping[str, str]] | None:
            return ("web-1", "prod", {cid: "server"}) if pod_uid == uid else None

    assert cgroup_labels(path, Resolver()) == ("web-1", "prod", "server", path)
    assert cgroup_labels("/system.slice/ssh.service") == ("", "", "", "/system.slice/ssh.service")


def test_cgroup_names_walk_a_tree(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    names = CgroupNames(root=str(tmp_path))
    ino_b = (tmp_path / "a" / "b").stat().st_ino
    assert names.resolve([ino_b, 1]) == {ino_b: "/a/b"}
    (tmp_path / "c").mkdir()  # an id not seen yet makes it walk again
    ino_c = (tmp_path / "c").stat().st_ino
    assert names.resolve([ino_c]) == {ino_c: "/c"}


# --- the collector's bookkeeping -------------------------------------------------------


class MapsInMemory:
    """Stands for the kernel maps: groups appear when their threads have events."""

    def __init__(self) -> None:
        self.threads: dict[int, int] = {}
        self.groups: dict[int, GroupStats] = {}
        self.closed = False
        self.compactions = 0

    def watch(self, tid: int, group: int) -> None:
        self.threads[tid] = group

    def forget(self, group: int) -> None:
        self.threads = {t: g for t, g in self.threads.items() if g != group}
        self.groups.pop(group, None)

    def read(self) -> dict[int, GroupStats]:
        return {g: GroupStats(**vars(s)) for g, s in self.groups.items()}

    def compact(self) -> None:
        self.compactions += 1

    def thread_count(self) -> int:
        return len(self.threads)

    def dropped(self) -> dict[str, int]:
        return {"threads_full": 0, "groups_full": 0}

    def close(self) -> None:
        self.closed = True


class Watched:
    def __init__(self) -> None:
        self.procs: dict[int, ProcessInfo] = {}
        self.resolver = None

    def snapshot(self) -> Mapping[int, ProcessInfo]:
        return dict(self.procs)


def proc_tree(root: Path, pid: int, tids: list[int]) -> None:
    for tid in tids:
        (root / str(pid) / "task" / str(tid)).mkdir(parents=True, exist_ok=True)


def make(tmp_path: Path) -> tuple[SchedCollector, MapsInMemory, Watched]:
    maps, watched = MapsInMemory(), Watched()
    c = SchedCollector(watched, lambda m, n: maps, procfs=str(tmp_path))  # type: ignore[arg-type]
    c.open()
    return c, maps, watched


def info(pid: int, start: int = 100, pod: str = "", comm: str = "python") -> ProcessInfo:
    return ProcessInfo(
        pid=pid,
        comm=comm,
        cmdline="python serve.py",
        start_time=start,
        pod=pod,
        namespace="ns" if pod else "",
    )


def scrape(c: SchedCollector) -> CollectorRegistry:
    c.refresh_now()
    assert c._error is None, c._error
    reg = CollectorRegistry(auto_describe=False)
    reg.register(c)  # type: ignore[arg-type]
    return reg


def test_new_processes_are_seeded_with_all_their_threads(tmp_path: Path) -> None:
    c, maps, watched = make(tmp_path)
    proc_tree(tmp_path, 10, [10, 11, 12])
    watched.procs[10] = info(10)
    reg = scrape(c)
    assert maps.threads == {10: 10, 11: 10, 12: 10}
    labels = {"pod": "", "namespace": "", "container": "", "comm": "python", "pid": "10"}
    # A watched process has its series from the start, at zero.
    assert (
        reg.get_sample_value("vigil_sched_context_switches_total", {**labels, "kind": "voluntary"})
        == 0.0
    )
    assert reg.get_sample_value("vigil_sched_watched_threads") == 3.0


def test_exited_processes_leave_maps_and_output(tmp_path: Path) -> None:
    c, maps, watched = make(tmp_path)
    proc_tree(tmp_path, 10, [10])
    watched.procs[10] = info(10)
    scrape(c)
    maps.groups[10] = stats(4)
    del watched.procs[10]
    reg = scrape(c)
    assert maps.threads == {} and maps.groups == {}
    assert (
        reg.get_sample_value(
            "vigil_sched_migrations_total",
            {"pod": "", "namespace": "", "container": "", "comm": "python", "pid": "10"},
        )
        is None
    )


def test_pod_series_stay_monotonic_when_a_member_exits(tmp_path: Path) -> None:
    c, maps, watched = make(tmp_path)
    for pid in (10, 20):
        proc_tree(tmp_path, pid, [pid])
        watched.procs[pid] = info(pid, pod="web-1")
    scrape(c)
    maps.groups[10], maps.groups[20] = stats(5, 2_000_000_000, 3), stats(7, 1_000_000_000, 3)
    # pid is empty where a pod is known: one series per pod/container/comm.
    labels = {"pod": "web-1", "namespace": "ns", "container": "", "comm": "python", "pid": ""}
    reg = scrape(c)
    vol = {**labels, "kind": "voluntary"}
    assert reg.get_sample_value("vigil_sched_context_switches_total", vol) == 12.0
    assert reg.get_sample_value("vigil_sched_runqueue_latency_seconds_sum", labels) == 3.0
    assert (
        reg.get_sample_value(
            "vigil_sched_runqueue_latency_seconds_bucket", {**labels, "le": "8e-06"}
        )
        == 2.0
    )
    del watched.procs[10]
    maps.groups[20].voluntary = 8
    reg = scrape(c)
    assert reg.get_sample_value("vigil_sched_context_switches_total", vol) == 13.0
    assert 10 not in maps.groups
    del watched.procs[20]
    reg = scrape(c)
    assert reg.get_sample_value("vigil_sched_context_switches_total", vol) is None
    assert c._retired == {}


def test_pid_reuse_keeps_the_series_monotonic_and_reseeds(tmp_path: Path) -> None:
    c, maps, watched = make(tmp_path)
    proc_tree(tmp_path, 10, [10])
    watched.procs[10] = info(10, start=100)
    scrape(c)
    maps.groups[10] = stats(50)
    watched.procs[10] = info(10, start=999)  # another process got pid 10
    reg = scrape(c)
    labels = {"pod": "", "namespace": "", "container": "", "comm": "python", "pid": "10"}
    # Same labels, same series: its counter must not go back.
    assert (
        reg.get_sample_value("vigil_sched_context_switches_total", {**labels, "kind": "voluntary"})
        == 50.0
    )
    assert maps.groups == {}  # the old process's totals left the kernel map
    assert maps.threads == {10: 10}


def test_groups_nobody_watches_are_dropped_not_exported(tmp_path: Path) -> None:
    c, maps, _ = make(tmp_path)
    maps.threads[77] = 77
    maps.groups[77] = stats(3)  # e.g. recreated by an event racing the group's removal
    reg = scrape(c)
    assert maps.groups == {} and maps.threads == {}
    assert reg.get_sample_value("vigil_sched_watched_threads") == 0.0


def test_a_missing_prerequisite_is_reported_before_loading(tmp_path: Path) -> None:
    loaded: list[str] = []

    def loader(mode: str, n: int) -> MapsInMemory:
        loaded.append(mode)
        return MapsInMemory()

    c = SchedCollector(
        Watched(),  # type: ignore[arg-type]
        loader,
        procfs=str(tmp_path),
        preflight=lambda: [
            Check("privilege", True, "root"),
            Check("kernel headers", False, "/lib/modules/x/build is missing", "apt-get install h"),
        ],
    )
    with pytest.raises(CollectorUnavailable) as exc:
        c.start()
    assert exc.value.reason == "kernel headers: /lib/modules/x/build is missing"
    assert exc.value.fix == "apt-get install h"
    assert loaded == []


def test_close_detaches_the_probe(tmp_path: Path) -> None:
    c, maps, _ = make(tmp_path)
    c.close()
    assert maps.closed


def test_filter_flags_are_compacted_twice_a_minute(tmp_path: Path) -> None:
    now = [0.0]
    maps = MapsInMemory()
    c = SchedCollector(
        Watched(),
        lambda m, n: maps,
        procfs=str(tmp_path),  # type: ignore[arg-type]
        clock=lambda: now[0],
    )
    c.open()
    for t in (1.0, 29.0, 31.0, 45.0, 62.0):
        now[0] = t
        c.refresh_now()
    assert maps.compactions == 2
