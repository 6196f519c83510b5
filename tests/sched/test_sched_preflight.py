"""The sched preflight: its pure parts, a verdict per node image, and docs/compatibility.md
checked row by row against those verdicts with the capabilities of the manifests in
deploy/ and deploy-overlays/."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from node_images import NODE_IMAGES

from agent.collectors.sched.collector import SchedCollector
from agent.collectors.sched.doctor import Setup
from agent.collectors.sched.preflight import (
    KHEADERS_UNPACKED_BYTES,
    PLACED_HEADERS,
    SYS_ADMIN_OVERLAY,
    HostFacts,
    HostPaths,
    cgroup_layout,
    gather,
    headers_fix,
    host_header_tree,
    merge_header_trees,
    parse_capabilities,
    parse_kernel,
    parse_memlock,
    preflight,
    resolve_in,
    with_capabilities,
)
from agent.collectors.sched.probe import SchedProbe, map_bytes
from agent.discovery import Discovery
from agent.registry import CollectorUnavailable

ROOT = Path(__file__).resolve().parents[2]
MAPS = map_bytes(32768)


def manifest_caps(path: Path) -> set[str]:
    """The agent container's added capabilities in a DaemonSet manifest."""
    ds = yaml.safe_load(path.read_text())
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    return set(c["securityContext"]["capabilities"]["add"])


def overlay_caps(name: str) -> set[str]:
    """Capabilities an overlay's JSON patches add to the agent container."""
    doc = yaml.safe_load((ROOT / "deploy-overlays" / name / "kustomization.yaml").read_text())
    caps: set[str] = set()
    for p in doc.get("patches", []):
        for op in yaml.safe_load(p.get("patch", "[]")) or []:
            if op["path"].endswith("/capabilities/add/-"):
                caps.add(op["value"])
    return caps


BASE_CAPS = manifest_caps(ROOT / "deploy" / "agent-daemonset.yaml")


# --- pure parts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("release", "want"),
    [
        ("6.18.44-fc-v595", (6, 18)),
        ("4.18.0-372.9.1.el8.x86_64", (4, 18)),
        ("5.10.227-219.884.amzn2.x86_64", (5, 10)),
        ("6.1.100+", (6, 1)),
        ("garbage", (0, 0)),
    ],
)
def test_kernel_versions(release: str, want: tuple[int, int]) -> None:
    assert parse_kernel(release) == want


def test_effective_capabilities_from_status() -> None:
    # root under the DaemonSet's set: SYS_PTRACE(19) SYS_RESOURCE(24) PERFMON(38) BPF(39)
    mask = (1 << 19) | (1 << 24) | (1 << 38) | (1 << 39)
    text = f"Name:\tvigil\nCapInh:\t0000000000000000\nCapEff:\t{mask:016x}\n"
    assert parse_capabilities(text) == {"SYS_PTRACE", "SYS_RESOURCE", "PERFMON", "BPF"}
    assert parse_capabilities("CapEff:\t000001ffffffffff\n") >= {"SYS_ADMIN", "BPF"}
    assert parse_capabilities("no such line") == frozenset()


def test_memlock_limits() -> None:
    text = (
        "Limit                     Soft Limit           Hard Limit           Units\n"
        "Max locked memory         65536                unlimited            bytes\n"
    )
    assert parse_memlock(text) == (65536, None)
    assert parse_memlock("Max locked memory  unlimited  unlimited  bytes\n") == (None, None)


UNIFIED = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n"
HYBRID = (
    "tmpfs /sys/fs/cgroup tmpfs ro 0 0\n"
    "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"
    "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n"
)
LEGACY = "tmpfs /sys/fs/cgroup tmpfs ro 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n"
# /proc/1/mounts of a systemd node booted hybrid (Ubuntu 20.04's default), cgroup lines.
HYBRID_NODE = (
    "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n"
    "tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0\n"
    "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n"
    "cgroup /sys/fs/cgroup/systemd cgroup rw,nosuid,nodev,noexec,relatime,xattr,"
    "name=systemd 0 0\n"
    "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0\n"
    "cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0\n"
)


@pytest.mark.parametrize(
    ("mounts", "want"),
    [(UNIFIED, "unified"), (HYBRID, "hybrid"), (LEGACY, "legacy"), ("", "none")],
)
def test_cgroup_layouts(mounts: str, want: str) -> None:
    assert cgroup_layout(mounts) == want


def test_hybrid_cgroups_are_refused_in_cgroup_mode(tmp_path: Path) -> None:
    """A systemd hybrid node (v1 controllers, cgroup2 at /sys/fs/cgroup/unified), whatever
    this machine mounts: init's mounts decide, not the pod's own (here pure v2)."""
    paths = fixture_host(tmp_path)
    proc, sys_ = Path(paths.proc), Path(paths.sys)
    (proc / "1").mkdir()
    (proc / "1/mounts").write_text(HYBRID_NODE)
    (proc / "self/mounts").write_text(UNIFIED)
    for d in ("unified", "systemd", "cpu,cpuacct", "memory"):
        (sys_ / "fs/cgroup" / d).mkdir(parents=True)
    facts, _ = gather(paths, "6.1.0-x")
    assert facts.cgroup_layout == "hybrid"
    mode = next(c for c in preflight(facts, "cgroup", MAPS).checks if c.what == "cgroup mode")
    assert not mode.ok and "are hybrid, not pure cgroup v2" in mode.detail
    assert "--collector.sched.mode=watched" in mode.fix
    # The same node in watched mode has no cgroup check to fail.
    watched = preflight(facts, "watched", MAPS).checks
    assert all(c.ok for c in watched if c.what == "cgroup mode")


def test_this_hosts_hybrid_cgroups_are_refused_in_cgroup_mode() -> None:
    """The same on this machine, when it is hybrid (v1 controllers + cgroup2 beside)."""
    facts, _ = gather()
    if facts.cgroup_layout == "unified":
        pytest.skip("this host is pure cgroup v2")
    v = preflight(facts, "cgroup", MAPS)
    failed = v.first_failure()
    assert failed is not None and failed.what == "cgroup mode", v.checks
    assert f"are {facts.cgroup_layout}, not pure cgroup v2" in failed.detail
    assert "--collector.sched.mode=watched" in failed.fix


def test_cgroup_mode_needs_5_5() -> None:
    facts = with_capabilities(NODE_IMAGES["rhel-8"], BASE_CAPS | {"SYS_ADMIN"})
    failed = preflight(replace(facts, cgroup_layout="unified"), "cgroup", MAPS).first_failure()
    assert failed is not None and "predates 5.5" in failed.detail


# --- per node image -------------------------------------------------------------------


def verdict_for(name: str, caps: set[str], mode: str = "watched") -> tuple[HostFacts, object]:
    facts = with_capabilities(NODE_IMAGES[name], caps)
    return facts, preflight(facts, mode, MAPS)


@pytest.mark.parametrize("name", ["ubuntu-22.04", "ubuntu-24.04", "debian-12"])
def test_paranoid_debian_and_ubuntu_kernels_need_the_sys_admin_overlay(name: str) -> None:
    facts = with_capabilities(NODE_IMAGES[name], BASE_CAPS)
    v = preflight(facts, "watched", MAPS)
    failed = v.first_failure()
    assert failed is not None and failed.what == "privilege for BPF"
    assert f"perf_event_paranoid is {facts.perf_event_paranoid}" in failed.detail
    assert failed.fix.startswith(SYS_ADMIN_OVERLAY)
    assert "kernel.perf_event_paranoid=2" in failed.fix
    assert v.needs == {"sys-admin overlay"}
    # The same sysctl on a mainline kernel means 2: CAP_PERFMON is enough there.
    mainline = replace(facts, kernel_build="Linux version 6.8.0 (builder@host)")
    assert preflight(mainline, "watched", MAPS).ok


@pytest.mark.parametrize("name", ["ubuntu-20.04", "rhel-8"])
def test_kernels_before_5_8_need_sys_admin(name: str) -> None:
    _, v = verdict_for(name, BASE_CAPS)
    failed = v.first_failure()  # type: ignore[attr-defined]
    assert failed is not None and "cap_last_cap 37 < 39" in failed.detail
    assert failed.fix == SYS_ADMIN_OVERLAY
    # A backported kernel that knows CAP_BPF is judged by the number, not the version.
    facts = replace(NODE_IMAGES["rhel-8"], cap_last_cap=39, capabilities=frozenset(BASE_CAPS))
    assert preflight(facts, "watched", MAPS).first_failure() is None


@pytest.mark.parametrize("name", ["rhel-8", "amazon-linux-2", "ubuntu-20.04"])
def test_memlock_before_5_11_needs_sys_resource(name: str) -> None:
    caps = BASE_CAPS | {"SYS_ADMIN"}
    _, v = verdict_for(name, caps)
    assert v.ok, v.checks  # type: ignore[attr-defined]
    _, v = verdict_for(name, caps - {"SYS_RESOURCE"})
    failed = v.first_failure()  # type: ignore[attr-defined]
    assert failed is not None and failed.what == "locked-memory limit"
    assert "RLIMIT_MEMLOCK (65536 B)" in failed.detail
    assert "SYS_RESOURCE" in failed.fix
    # An unlimited hard limit lets bcc raise it without the capability.
    facts = replace(NODE_IMAGES[name], capabilities=frozenset(caps - {"SYS_RESOURCE"}))
    assert preflight(replace(facts, memlock_hard=None), "watched", MAPS).ok


def test_memlock_is_not_charged_from_5_11() -> None:
    facts = with_capabilities(NODE_IMAGES["debian-12"], BASE_CAPS | {"SYS_ADMIN"})
    facts = replace(facts, capabilities=facts.capabilities - {"SYS_RESOURCE"}, memlock_soft=0)
    assert preflight(facts, "watched", MAPS).ok


def test_amazon_linux_2_uses_tracefs_under_debugfs_and_fails_without_it() -> None:
    facts, v = verdict_for("amazon-linux-2", BASE_CAPS)
    assert v.ok  # type: ignore[attr-defined]
    assert any(c.detail == "sched events under /sys/kernel/debug/tracing" for c in v.checks)  # type: ignore[attr-defined]
    failed = preflight(replace(facts, tracefs=None), "watched", MAPS).first_failure()
    assert failed is not None and failed.what == "tracefs"
    assert "/sys/kernel/debug into the pod" in failed.fix
    failed = preflight(
        replace(facts, tracefs=None, debugfs_mounted=False), "watched", MAPS
    ).first_failure()
    assert failed is not None and "mount -t debugfs" in failed.fix


def test_cos_needs_the_header_overlay() -> None:
    facts, v = verdict_for("cos", BASE_CAPS)
    failed = v.first_failure()  # type: ignore[attr-defined]
    assert failed is not None and failed.what == "kernel headers"
    assert "deploy-overlays/cos-headers" in failed.fix
    placed = f"/host{PLACED_HEADERS}/{facts.release}"
    v = preflight(replace(facts, placed_headers=placed), "watched", MAPS)
    assert v.ok and v.header_source == "placed" and v.header_path == placed


def test_flatcar_uses_kheaders_once_the_module_is_loaded() -> None:
    facts, v = verdict_for("flatcar", BASE_CAPS)
    failed = v.first_failure()  # type: ignore[attr-defined]
    assert failed is not None and failed.fix.startswith("modprobe kheaders")
    loaded = replace(facts, kheaders=True)
    v = preflight(loaded, "watched", MAPS)
    assert v.ok and v.header_source == "kheaders"
    # Without xz in the image, or without room to unpack, the kheaders route is refused.
    failed = preflight(replace(loaded, xz=False), "watched", MAPS).first_failure()
    assert failed is not None and "tar/xz are not in the image" in failed.detail
    small = replace(loaded, tmp_free_bytes=KHEADERS_UNPACKED_BYTES - 1)
    failed = preflight(small, "watched", MAPS).first_failure()
    assert failed is not None and "MiB free" in failed.detail
    # Already unpacked by an earlier start: no room needed.
    assert preflight(replace(small, kheaders_unpacked=True), "watched", MAPS).ok


def test_host_headers_win_over_kheaders_and_placed() -> None:
    facts = with_capabilities(NODE_IMAGES["bottlerocket"], BASE_CAPS)
    both = replace(facts, kheaders=True, placed_headers="/host/x")
    v = preflight(both, "watched", MAPS)
    assert v.header_source == "host"


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("amazon-linux-2023", "dnf install kernel-devel-"),
        ("azure-linux", "tdnf install kernel-devel-"),
        ("rhel-9", "dnf install kernel-devel-"),
        ("debian-12", "apt-get install linux-headers-"),
    ],
)
def test_missing_headers_say_how_to_install_them(name: str, command: str) -> None:
    facts = with_capabilities(
        replace(NODE_IMAGES[name], host_headers=None), BASE_CAPS | {"SYS_ADMIN"}
    )
    failed = preflight(facts, "watched", MAPS).first_failure()
    assert failed is not None and failed.what == "kernel headers"
    assert failed.fix.startswith(command + facts.release)


def test_without_any_capability_it_says_not_root() -> None:
    facts = with_capabilities(NODE_IMAGES["debian-12"], set())
    failed = preflight(facts, "watched", MAPS).first_failure()
    assert failed is not None and failed.detail.startswith("not root: CAP_BPF + CAP_PERFMON")


# --- docs/compatibility.md, row by row ------------------------------------------------

SETUP = {
    "—": lambda f: f,
    "install kernel-devel": lambda f: replace(f, host_headers=f"/usr/src/kernels/{f.release}"),
    "modprobe kheaders": lambda f: replace(f, kheaders=True),
}


def matrix() -> list[dict[str, str]]:
    text = (ROOT / "docs" / "compatibility.md").read_text()
    section = text.split("## Support matrix", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    return [dict(zip(header, r, strict=True)) for r in rows]


def test_every_fixture_has_a_row_and_every_row_a_fixture() -> None:
    assert sorted(r["fixture"] for r in matrix()) == sorted(NODE_IMAGES)


@pytest.mark.parametrize("row", matrix(), ids=lambda r: r["fixture"])
def test_the_support_matrix_is_what_the_preflight_says(row: dict[str, str]) -> None:
    base = NODE_IMAGES[row["fixture"]]
    assert re.match(rf"{base.kernel[0]}\.{base.kernel[1]}\b", row["kernel"]), row
    overlay = row["overlay"]
    caps = set(BASE_CAPS)
    if overlay != "—":
        assert (ROOT / "deploy-overlays" / overlay / "kustomization.yaml").exists(), overlay
        caps |= overlay_caps(overlay)
    facts = with_capabilities(SETUP[row["node set-up"]](base), caps)
    if overlay == "cos-headers":
        facts = replace(facts, placed_headers=f"/host{PLACED_HEADERS}/{facts.release}")

    v = preflight(facts, "watched", MAPS)
    assert v.ok, [c for c in v.checks if not c.ok]
    assert v.header_source == row["header source"]
    cgroup = preflight(facts, "cgroup", MAPS)
    assert cgroup.ok == row["cgroup mode"].startswith("yes"), cgroup.checks
    if not cgroup.ok:
        failed = cgroup.first_failure()
        assert failed is not None and failed.what == "cgroup mode"
        reason = row["cgroup mode"]
        assert ("5.5" in failed.detail) == ("kernel < 5.5" in reason), (reason, failed)

    # Each overlay and set-up in the row is needed: without it the preflight fails and
    # its fix names it.
    bare = with_capabilities(base, BASE_CAPS)
    if overlay == "sys-admin":
        failed = preflight(SETUP[row["node set-up"]](bare), "watched", MAPS).first_failure()
        assert failed is not None and SYS_ADMIN_OVERLAY in failed.fix
    if overlay == "cos-headers":
        failed = preflight(bare, "watched", MAPS).first_failure()
        assert failed is not None and "deploy-overlays/cos-headers" in failed.fix
    if row["node set-up"] != "—":
        failed = preflight(with_capabilities(base, caps), "watched", MAPS).first_failure()
        assert failed is not None and failed.what == "kernel headers"
        assert failed.fix.startswith(
            "modprobe kheaders" if "kheaders" in row["node set-up"] else headers_fix(base)
        )


# --- the shell, on fixture trees --------------------------------------------------------


def make_split_headers(root: Path, release: str) -> None:
    """Debian's layout: build -> arch tree (generated headers), source -> common tree."""
    arch = root / f"usr/src/linux-headers-{release}"
    common = root / "usr/src/linux-headers-common"
    (arch / "include/generated").mkdir(parents=True)
    (arch / "include/generated/autoconf.h").write_text("#define CONFIG_X 1\n")
    (arch / "arch/x86/include/generated").mkdir(parents=True)
    (common / "include/linux").mkdir(parents=True)
    (common / "include/linux/kconfig.h").write_text("/* kconfig */\n")
    (common / "arch/x86/include/asm").mkdir(parents=True)
    mods = root / f"lib/modules/{release}"
    mods.mkdir(parents=True)
    # Absolute links, as the packages install them: they must resolve inside `root`.
    (mods / "build").symlink_to(f"/usr/src/linux-headers-{release}")
    (mods / "source").symlink_to("/usr/src/linux-headers-common")


def test_header_links_resolve_inside_the_host_root(tmp_path: Path) -> None:
    host = tmp_path / "host"
    make_split_headers(host, "6.1.0-x")
    assert resolve_in(str(host), "/lib/modules/6.1.0-x/build") == str(
        host / "usr/src/linux-headers-6.1.0-x"
    )
    assert resolve_in(str(host), "/lib/modules/6.1.0-x/nothing") is None
    (host / "loop").symlink_to("/loop")
    assert resolve_in(str(host), "/loop/x") is None
    tree = host_header_tree(str(host), "6.1.0-x")
    assert tree == (
        str(host / "usr/src/linux-headers-6.1.0-x"),
        str(host / "usr/src/linux-headers-common"),
    )
    assert host_header_tree(str(host), "6.1.0-other") is None


def test_a_split_tree_merges_into_one_view(tmp_path: Path) -> None:
    host = tmp_path / "host"
    make_split_headers(host, "6.1.0-x")
    tree = host_header_tree(str(host), "6.1.0-x")
    assert tree is not None and tree[1] is not None
    view = Path(merge_header_trees(tree[0], tree[1], str(tmp_path / "view")))
    assert (view / "include/linux/kconfig.h").read_text() == "/* kconfig */\n"
    assert (view / "include/generated/autoconf.h").exists()
    assert (view / "arch/x86/include/generated").is_dir()
    assert (view / "arch/x86/include/asm").is_dir()
    # Idempotent: a second start reuses the view.
    merge_header_trees(tree[0], tree[1], str(view))


def fixture_host(tmp_path: Path) -> HostPaths:
    """A Debian 12 node as the pod sees it: paranoid 3, the DaemonSet's BPF + PERFMON,
    hybrid cgroups, tracefs only under debugfs, split headers under the host root."""
    proc, sys_, host = tmp_path / "proc", tmp_path / "sys", tmp_path / "host"
    (proc / "self").mkdir(parents=True)
    (proc / "sys/kernel").mkdir(parents=True)
    (proc / "self/status").write_text(f"CapEff:\t{(1 << 38) | (1 << 39):016x}\n")
    (proc / "self/limits").write_text("Max locked memory  65536  65536  bytes\n")
    (proc / "self/mounts").write_text(HYBRID + "debugfs /sys/kernel/debug debugfs rw 0 0\n")
    (proc / "version").write_text("Linux version 6.1.0-x (debian-kernel@lists.debian.org) Debian\n")
    (proc / "sys/kernel/cap_last_cap").write_text("40\n")
    (proc / "sys/kernel/perf_event_paranoid").write_text("3\n")
    (sys_ / "kernel/debug/tracing/events/sched/sched_switch").mkdir(parents=True)
    (host / "etc").mkdir(parents=True)
    (host / "etc/os-release").write_text('NAME="Debian"\nID=debian\n')
    make_split_headers(host, "6.1.0-x")
    return HostPaths(
        proc=str(proc),
        sys=str(sys_),
        host_root=str(host),
        tmpdir=str(tmp_path),
        which=lambda _: None,
    )


def test_gather_reads_a_fixture_host(tmp_path: Path) -> None:
    paths = fixture_host(tmp_path)
    host = Path(paths.host_root)
    facts, tree = gather(paths, "6.1.0-x")
    assert facts.kernel == (6, 1) and facts.distro == "debian"
    assert facts.capabilities == {"BPF", "PERFMON"}
    assert facts.perf_event_paranoid == 3 and facts.cap_last_cap == 40
    assert (facts.memlock_soft, facts.cgroup_layout) == (65536, "hybrid")
    assert facts.tracefs == "/sys/kernel/debug/tracing" and facts.debugfs_mounted
    assert facts.host_headers == str(host / "usr/src/linux-headers-6.1.0-x")
    assert tree is not None and not facts.kheaders and not facts.xz
    v = preflight(facts, "watched", MAPS)
    assert v.first_failure() is not None
    assert v.first_failure().fix.startswith(SYS_ADMIN_OVERLAY)  # type: ignore[union-attr]
    # Placed headers are found under the host root.
    placed = host / PLACED_HEADERS.lstrip("/") / "6.1.0-x/include/linux"
    placed.mkdir(parents=True)
    (placed / "kconfig.h").write_text("")
    assert gather(paths, "6.1.0-x")[0].placed_headers == str(placed.parent.parent)


def test_an_unreadable_cap_last_cap_is_said_and_not_taken_for_an_old_kernel(
    tmp_path: Path,
) -> None:
    paths = fixture_host(tmp_path)
    proc = Path(paths.proc)
    (proc / "sys/kernel/cap_last_cap").unlink()
    (proc / "sys/kernel/perf_event_paranoid").write_text("2\n")
    facts, _ = gather(paths, "6.1.0-x")
    assert facts.cap_last_cap is None

    def privilege(facts: HostFacts) -> tuple[object, set[str]]:
        v = preflight(facts, "watched", MAPS)
        return next(c for c in v.checks if c.what == "privilege for BPF"), v.needs

    # CAP_BPF + CAP_PERFMON held: the kernel knows them, nothing more is needed.
    check, needs = privilege(facts)
    assert check.ok and not needs, check  # type: ignore[attr-defined]
    # Neither held: the verdict says what could not be read and asks for no overlay.
    (proc / "self/status").write_text("CapEff:\t0000000000000000\n")
    check, needs = privilege(gather(paths, "6.1.0-x")[0])
    assert not check.ok  # type: ignore[attr-defined]
    assert "cap_last_cap could not be read" in check.detail  # type: ignore[attr-defined]
    assert "< 39" not in check.detail and not needs  # type: ignore[attr-defined]


def test_a_stale_link_from_an_earlier_header_layout_does_not_survive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BCC_KERNEL_SOURCE", "restored-after-the-test")
    paths = fixture_host(tmp_path)
    build = Path(paths.host_root) / "usr/src/linux-headers-6.1.0-x"
    (build / "include/old-only.h").write_text("/* first layout */\n")
    work = tmp_path / "work"
    work.mkdir()
    setup = Setup("watched", paths=paths, release="6.1.0-x")
    setup.run()
    setup.apply_headers(str(work))
    first = Path(os.environ["BCC_KERNEL_SOURCE"])
    assert (first / "include/old-only.h").is_file()
    (build / "include/old-only.h").unlink()  # headers upgraded in place
    setup.run()
    setup.apply_headers(str(work))
    second = Path(os.environ["BCC_KERNEL_SOURCE"])
    assert not os.path.lexists(second / "include/old-only.h")
    assert (second / "include/linux/kconfig.h").read_text() == "/* kconfig */\n"
    assert (second / "include/generated/autoconf.h").is_file()
    assert [p.name for p in work.iterdir()] == [second.name]  # the first view is gone


def test_gather_on_this_host_matches_the_kernel() -> None:
    facts, _ = gather()
    assert facts.release == os.uname().release
    assert facts.kernel == parse_kernel(os.uname().release)
    assert facts.cap_last_cap >= 36


def test_the_collector_reports_the_preflight_as_its_reason(tmp_path: Path) -> None:
    paths = fixture_host(tmp_path)
    setup = Setup("watched", paths=paths, release="6.1.0-x")

    def loader(mode: str, n: int) -> SchedProbe:
        raise AssertionError("the probe must not be loaded when the preflight fails")

    c = SchedCollector(Discovery(patterns=["nothing-matches-this"]), loader, preflight=setup.checks)
    with pytest.raises(CollectorUnavailable) as exc:
        c.start()
    assert exc.value.reason.startswith("privilege for BPF: perf_event_paranoid is 3")
    assert exc.value.fix.startswith(SYS_ADMIN_OVERLAY)
