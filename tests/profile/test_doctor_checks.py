"""The profile collector's doctor checks, on fixture /proc trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.collectors.profile.doctor import has_cap_sys_ptrace, privilege_check, ptrace_scope_check

FULL = "Name:\tvigil\nCapEff:\t000001ffffffffff\n"
NO_PTRACE = "Name:\tvigil\nCapEff:\t00000000a80425fb\n"  # docker's default set


def procfs(tmp_path: Path, status: str, scope: str | None) -> str:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "status").write_text(status)
    if scope is not None:
        (tmp_path / "sys" / "kernel" / "yama").mkdir(parents=True)
        (tmp_path / "sys" / "kernel" / "yama" / "ptrace_scope").write_text(scope)
    return str(tmp_path)


def test_cap_sys_ptrace_bit() -> None:
    assert has_cap_sys_ptrace(FULL)
    assert not has_cap_sys_ptrace(NO_PTRACE)
    assert has_cap_sys_ptrace("CapEff:\t0000000000080000\n")  # bit 19 alone
    assert not has_cap_sys_ptrace("Name: x\n")


def test_privilege(tmp_path: Path) -> None:
    assert privilege_check(procfs(tmp_path, FULL, None), euid=0).ok


def test_root_in_a_container_without_sys_ptrace(tmp_path: Path) -> None:
    c = privilege_check(procfs(tmp_path, NO_PTRACE, None), euid=0)
    assert not c.ok and "SYS_PTRACE" in c.detail and "SYS_PTRACE" in c.fix


def test_not_root(tmp_path: Path) -> None:
    c = privilege_check(procfs(tmp_path, NO_PTRACE, None), euid=1000)
    assert not c.ok and "same user" in c.detail


@pytest.mark.parametrize(
    ("scope", "ok"),
    [(None, True), ("0", True), ("1", True), ("2", True), ("3", False), ("junk", False)],
)
def test_ptrace_scope(tmp_path: Path, scope: str | None, ok: bool) -> None:
    c = ptrace_scope_check(procfs(tmp_path, FULL, scope))
    assert c.ok is ok, c
