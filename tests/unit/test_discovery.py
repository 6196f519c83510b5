"""Discovery on fixture proc trees (injected procfs) and on the real /proc."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from agent.discovery import Discovery, ProcessInfo, series_labels

UID = "0f4b5c6e-9c3a-4b1e-8d2f-1a2b3c4d5e6f"
CID = "4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091"


def make_proc(
    root: Path,
    pid: int,
    cmdline: list[str],
    comm: str,
    start: int,
    cgroup: str = "0::/user.slice\n",
) -> None:
    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in cmdline) + b"\0")
    (d / "comm").write_text(comm + "\n")
    fields = ["S"] + ["0"] * 18 + [str(start)] + ["0"] * 30
    (d / "stat").write_text(f"{pid} ({comm}) " + " ".join(fields))
    (d / "cgroup").write_text(cgroup)


class Resolver:
    def lookup(self, pod_uid: str):
        return ("llm-7d9f", "serving", {CID: "vllm"}) if pod_uid == UID else None


def test_matches_patterns_and_attributes_pods(tmp_path: Path) -> None:
    make_proc(
        tmp_path,
        100,
        ["python3", "-m", "vllm.entrypoints.api_server"],
        "python3",
        5,
        f"0::/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/"
        f"cri-containerd-{CID}.scope\n",
    )
    make_proc(tmp_path, 200, ["/usr/bin/bash"], "bash", 6)
    make_proc(tmp_path, 300, ["python3", "train.py"], "python3", 7)
    (tmp_path / "self").mkdir()  # non-numeric entries are ignored
    d = Discovery(procfs=str(tmp_path), patterns=[r"vllm"], resolver=Resolver(), self_pid=1)
    d.refresh()
    snap = d.snapshot()
    assert set(snap) == {100}
    p = snap[100]
    assert (p.pod, p.namespace, p.container, p.pod_uid, p.container_id) == (
        "llm-7d9f",
        "serving",
        "vllm",
        UID,
        CID,
    )
    assert p.labels() == {
        "pod": "llm-7d9f",
        "namespace": "serving",
        "container": "vllm",
        "comm": "python3",
    }


def test_extra_pids_from_other_components(tmp_path: Path) -> None:
    make_proc(tmp_path, 300, ["python3", "train.py"], "python3", 7)
    d = Discovery(procfs=str(tmp_path), patterns=[], self_pid=1)
    d.refresh()
    assert d.snapshot() == {}
    d.set_extra("gpu", [300, 999])  # 999 does not exist: silently not watched
    d.refresh()
    assert set(d.snapshot()) == {300}
    assert d.snapshot()[300].sources == frozenset({"gpu"})
    # Without a pod, series carry the pid.
    assert d.snapshot()[300].labels()["pid"] == "300"
    d.set_extra("gpu", [])
    d.refresh()
    assert d.snapshot() == {}


def test_pid_reuse_rereads_identity(tmp_path: Path) -> None:
    make_proc(
        tmp_path,
        100,
        ["python3", "serve.py", "vllm"],
        "python3",
        5,
        f"0::/kubepods/burstable/pod{UID}/{CID}\n",
    )
    d = Discovery(procfs=str(tmp_path), patterns=["vllm"], self_pid=1)
    d.refresh()
    assert d.snapshot()[100].pod_uid == UID
    # Same pid, new process (new start time) outside any pod.
    make_proc(tmp_path, 100, ["python3", "other.py", "vllm"], "python3", 99, "0::/user.slice\n")
    d.refresh()
    assert d.snapshot()[100].pod_uid == ""
    assert d.snapshot()[100].start_time == 99


def test_vanished_and_unreadable_processes_are_skipped(tmp_path: Path) -> None:
    make_proc(tmp_path, 100, ["python3", "vllm"], "python3", 5)
    (tmp_path / "100" / "stat").unlink()  # gone mid-read
    make_proc(
        tmp_path, 101, ["python3", "vllm"], "python3", 5, "0::/kubepods/burstable/podXYZ/abc\n"
    )  # kube path of unknown shape
    (tmp_path / "102").mkdir()  # no files at all
    d = Discovery(procfs=str(tmp_path), patterns=["vllm"], self_pid=1)
    d.refresh()
    assert set(d.snapshot()) == {101}
    reg = CollectorRegistry(auto_describe=False)

    class Wrap:
        def collect(self):
            return d.collect()

    reg.register(Wrap())
    assert (
        reg.get_sample_value(
            "vigil_discovery_skipped_processes_total", {"reason": "unknown_cgroup"}
        )
        == 1.0
    )
    assert (
        reg.get_sample_value(
            "vigil_watched_process_info",
            {
                "pid": "101",
                "comm": "python3",
                "pod": "",
                "namespace": "",
                "container": "",
                "pod_uid": "",
                "container_id": "",
                "source": "watch",
                "workload_kind": "",
                "workload": "",
            },
        )
        == 1.0
    )


def test_missing_procfs_does_not_raise(tmp_path: Path) -> None:
    d = Discovery(procfs=str(tmp_path / "nope"), patterns=["x"])
    d.refresh()
    assert d.snapshot() == {}


def test_series_labels_without_info() -> None:
    assert series_labels(None, 42, "python3") == ("", "", "", "python3", "42")
    info = ProcessInfo(pid=7, comm="c", cmdline="c", start_time=1, pod_uid=UID)
    assert series_labels(info, 7) == (UID, "", "", "c", "")


def test_real_proc_finds_a_real_interpreter() -> None:
    marker = f"vigil_discovery_marker_{time.time_ns()}"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
    try:
        d = Discovery(patterns=[marker])
        deadline = time.monotonic() + 5
        while True:  # until the child has exec'd (its cmdline is the parent's before that)
            d.refresh()
            if d.snapshot() or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert list(d.snapshot()) == [child.pid]
        assert d.snapshot()[child.pid].comm.startswith("python")
    finally:
        child.kill()
        child.wait()
    d.refresh()
    assert d.snapshot() == {}
