"""Node images emulated on this machine, for real: a fresh process runs the collector's
set-up (preflight, header choice, probe load: tests/sched/setup_probe.py) inside a private
mount namespace (`unshare -m`, so the host's own mounts, which other tests use, stay as
they are) or under `setpriv` with the DaemonSet's capabilities.

Also the cgroup-mode thread map: real threads of a real Python process come and go, and
the map holds only the live ones.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.collectors.sched.preflight import (
    KHEADERS_UNPACKED_BYTES,
    host_header_tree,
    merge_header_trees,
)
from agent.collectors.sched.probe import SchedProbe

pytestmark = [pytest.mark.bpf, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
HELPER = Path(__file__).resolve().parent / "setup_probe.py"
RELEASE = os.uname().release


@pytest.fixture(autouse=True)
def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("mount namespaces and BPF need root")
    for tool in ("unshare", "setpriv", "prlimit", "tar", "xz"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (util-linux, tar, xz-utils)")


def in_namespace(script: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Runs ``script`` (bash, `set -e`) in a private mount namespace, then the helper."""
    body = f"set -e\n{script}\nexec {sys.executable} {HELPER} {' '.join(args)}\n"
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "bash", "-c", body],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def check(out: dict[str, Any], what: str) -> list[Any]:
    found = [c for c in out["checks"] if c[0] == what]
    assert found, out
    return list(found[0])


def daemonset_caps() -> list[str]:
    ds = yaml.safe_load((ROOT / "deploy" / "agent-daemonset.yaml").read_text())
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    return list(c["securityContext"]["capabilities"]["add"])


def test_tracefs_unmounted_the_probe_loads_through_debugfs() -> None:
    """Amazon Linux 2: nothing at /sys/kernel/tracing, debugfs at /sys/kernel/debug."""
    out = in_namespace(
        "umount /sys/kernel/tracing\n"
        "mountpoint -q /sys/kernel/debug || mount -t debugfs nodev /sys/kernel/debug",
        "watched",
        "/",
    )
    assert check(out, "tracefs")[1:3] == [True, "sched events under /sys/kernel/debug/tracing"]
    assert out["loaded"], out


def test_without_tracefs_or_debugfs_the_preflight_says_how_to_mount_it() -> None:
    out = in_namespace(
        "umount /sys/kernel/tracing\n"
        "! mountpoint -q /sys/kernel/debug || umount -l /sys/kernel/debug",
        "watched",
        "/",
    )
    tracefs = check(out, "tracefs")
    assert tracefs[1] is False and "mount -t tracefs" in tracefs[3]
    assert not out["loaded"]


@pytest.fixture(scope="module")
def kheaders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kheaders.tar.xz in the kernel's layout (include/, arch/x86/include/), built from
    the installed headers: what CONFIG_IKHEADERS puts at /sys/kernel/kheaders.tar.xz."""
    tree = host_header_tree("/", RELEASE)
    if tree is None:
        pytest.fail(f"no headers for {RELEASE} on this machine (sudo scripts/setup.sh)")
    work = tmp_path_factory.mktemp("kheaders")
    view = tree[0] if tree[1] is None else merge_header_trees(tree[0], tree[1], str(work / "v"))
    tarball = work / "kheaders.tar.xz"
    subprocess.run(
        ["tar", "-C", view, "-chJf", str(tarball), "include", "arch/x86/include"],
        check=True,
        env={**os.environ, "XZ_OPT": "-0"},  # speed over size: it is read once
        timeout=300,
    )
    return tarball


def test_host_headers_hidden_bcc_unpacks_kheaders(kheaders: Path, tmp_path: Path) -> None:
    """Flatcar with the kheaders module loaded: no headers anywhere but the kernel's own
    tarball, served at /sys/kernel/kheaders.tar.xz, which bcc unpacks itself."""
    keep, tmpdir = tmp_path / "sys-kernel", tmp_path / "tmp"
    keep.mkdir()
    tmpdir.mkdir()
    script = textwrap.dedent(f"""
        mount --rbind /sys/kernel {keep}
        mount -t tmpfs -o size=64m none /sys/kernel
        mkdir /sys/kernel/tracing
        mount --rbind {keep}/tracing /sys/kernel/tracing
        cp {kheaders} /sys/kernel/kheaders.tar.xz
        mount -t tmpfs none /lib/modules/{RELEASE}
        mount -t tmpfs none /usr/src
    """)
    out = in_namespace(script, "watched", "/", env={"TMPDIR": str(tmpdir)})
    headers = check(out, "kernel headers")
    assert headers[1] is True and headers[2].startswith("kheaders: "), out
    assert out["source"] == "kheaders"
    assert out["loaded"], out
    unpacked = tmpdir / f"kheaders-{RELEASE}"
    assert (unpacked / "include/linux/kconfig.h").is_file()
    size = sum(f.stat().st_size for f in unpacked.rglob("*") if f.is_file())
    print(f"kheaders unpacked: {size / 2**20:.1f} MiB")
    assert size < KHEADERS_UNPACKED_BYTES


def test_headers_only_under_the_host_root_reach_bcc(tmp_path: Path) -> None:
    """The pod: the node's root read-only at /host, nothing at /lib/modules or /usr/src."""
    host, tmpdir = tmp_path / "host", tmp_path / "tmp"
    host.mkdir()
    tmpdir.mkdir()
    script = textwrap.dedent(f"""
        mount --rbind / {host}
        mount -o remount,bind,ro {host}
        mount -t tmpfs none /lib/modules/{RELEASE}
        mount -t tmpfs none /usr/src
    """)
    out = in_namespace(script, "watched", str(host), env={"TMPDIR": str(tmpdir)})
    headers = check(out, "kernel headers")
    assert headers[1] is True and headers[2].startswith(f"host: the node's own headers at {host}")
    assert out["loaded"], out
    assert "BCC_KERNEL_SOURCE=" in out["used"]


def test_no_headers_anywhere_is_refused_with_the_fix() -> None:
    out = in_namespace(
        f"mount -t tmpfs none /lib/modules/{RELEASE}\nmount -t tmpfs none /usr/src",
        "watched",
        "/",
    )
    headers = check(out, "kernel headers")
    assert headers[1] is False and f"no headers for {RELEASE}" in headers[2]
    assert not out["loaded"]


def setpriv(caps: list[str]) -> list[str]:
    allowed = ",".join(f"+{c.lower()}" for c in caps)
    return ["setpriv", f"--bounding-set=-all,{allowed}", "--inh-caps=-all", "--no-new-privs"]


def run_helper(prefix: list[str], mode: str = "watched", *proc_dir: str) -> dict[str, Any]:
    proc = subprocess.run(
        [*prefix, sys.executable, str(HELPER), mode, "/", *proc_dir],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_the_daemonsets_capabilities_load_the_probe() -> None:
    out = run_helper(setpriv(daemonset_caps()))
    assert check(out, "privilege for BPF")[1] is True
    assert out["loaded"], out


def test_without_sys_resource_a_small_memlock_limit_does_not_matter_from_5_11() -> None:
    """This kernel (6.18) charges BPF maps to the memory cgroup: a 64 KiB RLIMIT_MEMLOCK
    without CAP_SYS_RESOURCE, which would stop the load before 5.11, does not here. The
    pre-5.11 refusal is covered by the fixtures (test_sched_preflight.py)."""
    if tuple(int(x) for x in RELEASE.split(".")[:2]) < (5, 11):
        pytest.skip("this kernel still charges RLIMIT_MEMLOCK")
    caps = [c for c in daemonset_caps() if c != "SYS_RESOURCE"]
    out = run_helper(["prlimit", "--memlock=65536:65536", *setpriv(caps)])
    memlock = check(out, "locked-memory limit")
    assert memlock[1] is True and "charges BPF maps to the memory cgroup" in memlock[2]
    assert out["loaded"], out


# The cgroup lines of init's mounts on a systemd node booted hybrid, and on one booted
# unified (systemd.unified_cgroup_hierarchy=1).
HYBRID_CGROUPS = [
    "tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0",
    "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime 0 0",
    "cgroup /sys/fs/cgroup/systemd cgroup rw,nosuid,nodev,noexec,relatime,name=systemd 0 0",
    "cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0",
]
UNIFIED_CGROUPS = ["cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0"]


def node_proc(tmp_path: Path, cgroups: list[str]) -> Path:
    """This machine's /proc as the agent reads it, except init's mounts: this machine's
    own with their cgroup lines replaced by ``cgroups``."""
    proc = tmp_path / "proc"
    (proc / "1").mkdir(parents=True)
    for name in ("self", "version", "sys"):
        (proc / name).symlink_to(f"/proc/{name}")  # "self" resolves to the helper
    with open("/proc/self/mounts") as f:
        lines = f.read().splitlines()
    kept = [ln for ln in lines if not ln.split()[1].startswith("/sys/fs/cgroup")]
    (proc / "1/mounts").write_text("\n".join([*kept, *cgroups]) + "\n")
    return proc


def test_cgroup_mode_on_a_hybrid_node_is_refused_by_the_agent(tmp_path: Path) -> None:
    out = run_helper([], "cgroup", str(node_proc(tmp_path, HYBRID_CGROUPS)))
    mode = check(out, "cgroup mode")
    assert mode[1] is False and "are hybrid, not pure cgroup v2" in mode[2]
    assert not out["loaded"]
    # The node's mounts decide, not this machine's: the same agent on a unified node.
    out = run_helper([], "cgroup", str(node_proc(tmp_path / "unified", UNIFIED_CGROUPS)))
    assert check(out, "cgroup mode")[1:3] == [True, "pure cgroup v2"]


def test_cgroup_mode_on_this_hybrid_host_is_refused_by_the_agent() -> None:
    """The same with this machine's own mounts, when it is hybrid."""
    out = run_helper([], mode="cgroup")
    mode = check(out, "cgroup mode")
    with open("/proc/self/mounts") as f:
        unified = any(
            ln.split()[1:3] == ["/sys/fs/cgroup", "cgroup2"] for ln in f.read().splitlines()
        )
    if unified:
        pytest.skip("this host is pure cgroup v2")
    assert mode[1] is False and "not pure cgroup v2" in mode[2]
    assert not out["loaded"]


# --- the cgroup-mode thread map -----------------------------------------------------

CHURN = """
import sys, threading
n = int(sys.argv[1])
sys.stdout.write("ready\\n"); sys.stdout.flush()
sys.stdin.readline()
for _ in range(n // 50):
    ts = [threading.Thread(target=lambda: None) for _ in range(50)]
    for t in ts: t.start()
    for t in ts: t.join()
sys.stdout.write("done\\n"); sys.stdout.flush()
sys.stdin.readline()
"""


def live_threads() -> int:
    return sum(
        len(os.listdir(f"/proc/{p}/task"))
        for p in os.listdir("/proc")
        if p.isdigit() and os.path.isdir(f"/proc/{p}/task")
    )


@pytest.fixture
def cgroup_probe() -> Iterator[SchedProbe]:
    # Loaded directly: the probe's accounting does not depend on the host's cgroup layout
    # (the preflight's refusal on hybrid hosts is about naming cgroups, tested above).
    probe = SchedProbe("cgroup", 8192)
    yield probe
    probe.close()


def test_thread_churn_leaves_the_cgroup_mode_thread_map_flat(cgroup_probe: SchedProbe) -> None:
    """Without the delete at a thread's last switch, every exited thread would stay in
    the map (that switch re-inserts it after sched_process_exit removed it): 6,000
    short-lived threads would leave 6,000 entries."""
    churned = 6000
    time.sleep(0.5)  # every running task switches once and is tracked
    before = cgroup_probe.thread_count()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHURN, str(churned)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline() == "ready\n"
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "done\n"
        after = cgroup_probe.thread_count()
        live = live_threads()
    finally:
        proc.kill()
        proc.wait()
    print(f"thread map: {before} before, {after} after {churned} threads; {live} live")
    # The map follows the live threads, whatever other work runs on this machine meanwhile.
    assert after <= live + 500, (before, after, live)
    assert after - before < churned // 10, (before, after)
