"""Nothing of a profile window outlives the agent: py-spy children die with it (even by
SIGKILL), and the next agent removes the private directory a killed one left behind."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from agentproc import AgentProcess
from conftest import WATCH, Workloads

from agent.collectors.profile.pyspy import (
    WORKDIR_PREFIX,
    clean_stale_workdirs,
    find_pyspy,
    is_stale,
    parse_start_ticks,
    parse_workdir_name,
    start_ticks,
)

needs_pyspy = pytest.mark.skipif(find_pyspy() is None, reason="py-spy is not installed")

# A real line of /proc/<pid>/stat, with a command name that holds ") (" to trip a naive split.
STAT = (
    "4242 (py) (spy x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 12 3 0 0 20 0 1 0 "
    "987654 12345678 900 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 3 0 0 0 0 0"
)


# -- pure parts --------------------------------------------------------------------------
def test_parse_start_ticks_counts_fields_after_the_command_name() -> None:
    assert parse_start_ticks(STAT) == 987654
    assert parse_start_ticks(f"1 (systemd) {STAT.split(') ', 2)[2]}") == 987654


@pytest.mark.parametrize("text", ["", "4242 (py", "4242 (py) S 1 2 3", "garbage"])
def test_parse_start_ticks_refuses_what_is_not_a_stat_line(text: str) -> None:
    with pytest.raises(ValueError):
        parse_start_ticks(text)


@pytest.mark.parametrize(
    ("name", "owner"),
    [
        ("vigil-profile-4242.987654-ab_c12", (4242, 987654)),
        ("vigil-profile-1.0-x", (1, 0)),
        ("vigil-profile-abcd1234", None),  # the old, ownerless name: never touched
        ("vigil-profile-4242.987654-", None),
        ("vigil-profile-4242-987654-x", None),
        ("other-4242.987654-x", None),
        ("vigil-profile-4242.987654-x/../y", None),
    ],
)
def test_parse_workdir_name(name: str, owner: tuple[int, int] | None) -> None:
    assert parse_workdir_name(name) == owner


def test_is_stale_only_when_the_owner_is_gone_or_its_pid_reused() -> None:
    running = {4242: 987654}
    started: Callable[[int], int | None] = running.get
    assert not is_stale("vigil-profile-4242.987654-x", started)  # its agent still runs
    assert is_stale("vigil-profile-4242.111-x", started)  # pid reused by another process
    assert is_stale("vigil-profile-99.987654-x", started)  # no such process
    assert not is_stale("vigil-profile-abcd1234", started)  # owner unknown: keep


# -- the cleaner against a directory tree and a fixture /proc ------------------------------
def fake_proc(root: Path, procs: dict[int, str]) -> Path:
    for pid, stat in procs.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "stat").write_text(stat)
    return root


def test_clean_removes_only_dead_owners_dirs_of_this_user(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = fake_proc(tmp_path / "proc", {4242: STAT, 77: "77 (broken"})
    dead = temp / "vigil-profile-99.5-aaaa"
    reused = temp / "vigil-profile-4242.5-bbbb"
    alive = temp / "vigil-profile-4242.987654-cccc"
    unsure = temp / "vigil-profile-77.5-dddd"  # its /proc entry cannot be read: keep
    old_style = temp / "vigil-profile-eeee"
    foreign = temp / "other-99.5-ffff"
    for d in (dead, reused, alive, unsure, old_style, foreign):
        d.mkdir()
        (d / "99-cpu.txt").write_text("stacks")
    target = tmp_path / "precious"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    (temp / "vigil-profile-98.5-link").symlink_to(target)  # a planted link: not followed
    (temp / "vigil-profile-97.5-file").write_text("a file, not a directory")

    removed = clean_stale_workdirs(temp, proc)

    assert sorted(removed) == sorted([dead, reused])
    assert not dead.exists() and not reused.exists()
    for kept in (alive, unsure, old_style, foreign):
        assert (kept / "99-cpu.txt").exists(), kept
    assert (target / "keep.txt").exists()
    assert (temp / "vigil-profile-98.5-link").is_symlink()
    assert (temp / "vigil-profile-97.5-file").is_file()


def test_clean_of_a_missing_root_removes_nothing(tmp_path: Path) -> None:
    assert clean_stale_workdirs(tmp_path / "absent") == []


# -- a real agent, a real workload, real py-spy -------------------------------------------
def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start ticks) of a running process; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def pyspy_children(parent: int) -> dict[int, int]:
    """{pid: start ticks} of the py-spy processes whose parent is ``parent``."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        st = proc_stat(int(entry.name))
        if comm == "py-spy" and st is not None and st[1] == parent:
            out[int(entry.name)] = st[2]
    return out


def running(pid: int, ticks: int) -> bool:
    """Still running as the same process: not gone, not a zombie, pid not reused."""
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X") and st[2] == ticks


def agent_args() -> list[str]:
    return [
        "--watch",
        WATCH,
        "--discovery.interval",
        "0.5s",
        "--no-collector.sched",
        "--no-collector.gpu",
        "--no-collector.drift",
        # A long window: killed with the agent, the children would run on for most of it.
        "--collector.profile.window",
        "60s",
        "--collector.profile.cpu-budget",
        "1",
        "--collector.profile.cpu-budget-per-process",
        "1",
    ]


@pytest.mark.slow
@needs_pyspy
def test_sigkilled_agent_takes_its_pyspy_children_and_next_agent_cleans_up(
    workloads: Workloads, tmp_path: Path
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    # Directories that are not a dead agent's: another user's old-style name, and one of a
    # live process (this test's own), which must both survive the cleanup.
    old_style = temp / f"{WORKDIR_PREFIX}oldstyle"
    old_style.mkdir()
    live = temp / f"{WORKDIR_PREFIX}{os.getpid()}.{start_ticks(os.getpid())}-live"
    live.mkdir()
    workloads.start("mix")
    env = {"TMPDIR": str(temp)}

    with AgentProcess(agent_args(), env=env) as agent:
        assert agent.proc is not None
        pid = agent.proc.pid
        deadline = time.monotonic() + 30
        children: dict[int, int] = {}
        while not children and time.monotonic() < deadline:
            time.sleep(0.2)
            children = pyspy_children(pid)
        assert children, f"no py-spy child appeared; agent log:\n{agent.logs()[-3000:]}"
        (workdir,) = temp.glob(f"{WORKDIR_PREFIX}{pid}.*")

        agent.proc.kill()  # SIGKILL: the agent gets no chance to reap or clean anything
        agent.proc.wait()
        # Generous for a loaded machine; without the death signal they run for ~60 s.
        deadline = time.monotonic() + 2.0
        while any(running(c, t) for c, t in children.items()) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [c for c, t in children.items() if running(c, t)]
        assert not left, f"py-spy {left} outlived the SIGKILLed agent {pid}"
        assert workdir.is_dir()  # what the next agent has to clean

    with AgentProcess(agent_args(), env=env) as agent:
        assert agent.proc is not None
        assert not workdir.exists(), f"stale {workdir} left; log:\n{agent.logs()[-2000:]}"
        assert old_style.is_dir() and live.is_dir()
        assert list(temp.glob(f"{WORKDIR_PREFIX}{agent.proc.pid}.*"))  # its own, created
        assert "removed profile dirs of agents no longer running" in agent.logs()
