"""Can the sched probe load on this node, and if not, exactly what fixes it.

``preflight(facts)`` is a pure function over :class:`HostFacts` (kernel version, capability
numbers the kernel knows, ``perf_event_paranoid``, effective capabilities, the cgroup
layout, tracefs and debugfs, where kernel headers can come from); ``gather()`` is the thin
shell that reads those facts from the real host, every path injectable. `vigil doctor`
prints the verdict and the collector reports it as its failure reason, so a node that
cannot run the probe says why before clang or the verifier do.

Header sources, tried in this order (the first one that has ``include/linux/kconfig.h``,
the file bcc itself checks, wins):

1. ``host``: the node's own headers, ``/lib/modules/<release>/build`` (and ``source``)
   resolved inside the node's root filesystem (mounted read-only at ``host_root`` in the
   pod), handed to bcc through ``BCC_KERNEL_SOURCE``;
2. ``kheaders``: ``/sys/kernel/kheaders.tar.xz`` (``CONFIG_IKHEADERS``), which bcc unpacks
   itself into ``$TMPDIR/kheaders-<release>`` with ``tar -xf`` (so ``xz`` must be in the
   image) when no headers are found;
3. ``placed``: headers an init container put at ``PLACED_HEADERS/<release>`` on the node
   (Google COS, whose headers exist only as a download: deploy-overlays/cos-headers).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from agent.collectors.sched.probe import REQUIRED_FIELDS
from agent.registry import Check

# Capability numbers (include/uapi/linux/capability.h).
CAP_NUMBERS = {
    "SYS_PTRACE": 19,
    "SYS_ADMIN": 21,
    "SYS_RESOURCE": 24,
    "PERFMON": 38,  # 5.8
    "BPF": 39,  # 5.8
}

# Where the COS init container (deploy-overlays/cos-headers) puts headers on the node.
PLACED_HEADERS = "/var/lib/vigil/kernel-headers"
KHEADERS = "/sys/kernel/kheaders.tar.xz"
TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

# BPF maps are charged to the memory cgroup from 5.11 on ("bpf: memcg-based memory
# accounting for bpf maps"); before, to RLIMIT_MEMLOCK.
MEMCG_ACCOUNTING = (5, 11)
# bpf_get_current_cgroup_id() returns the cgroup2 inode number (what a walk of the mount
# sees as st_ino) from 5.5 on; before, gen << 32 | ino, which never matches.
CGROUP_ID_IS_INODE = (5, 5)
# CAP_BPF and CAP_PERFMON exist from 5.8 (cap_last_cap 39 and above).
SPLIT_CAPS = CAP_NUMBERS["BPF"]
# kheaders.tar.xz unpacked: 39 MiB of files (57 MiB in 4 KiB blocks) for Debian 6.1's
# headers packed as kheaders packs them, include/ and arch/x86/include/
# (tests/sched/test_sched_emulated.py); rounded up for the check.
KHEADERS_UNPACKED_BYTES = 64 * 2**20

SYS_ADMIN_OVERLAY = "kubectl apply -k deploy-overlays/sys-admin"


@dataclass(frozen=True)
class HostFacts:
    """What decides whether the probe loads. Each fixture in tests/sched/node_images.py
    fills these from what a node image really has."""

    release: str  # uname -r
    kernel: tuple[int, int]  # parsed from release
    kernel_build: str  # /proc/version: which vendor built (and patched) the kernel
    distro: str  # ID= of the node's /etc/os-release ("" when unknown)
    cap_last_cap: int | None  # /proc/sys/kernel/cap_last_cap; None: could not be read
    perf_event_paranoid: int | None  # /proc/sys/kernel/perf_event_paranoid
    capabilities: frozenset[str]  # effective set, names as in CAP_NUMBERS
    memlock_soft: int | None  # RLIMIT_MEMLOCK in bytes, None = unlimited
    memlock_hard: int | None
    cgroup_layout: str  # "unified" | "hybrid" | "legacy" | "none"
    tracefs: str | None  # where sched events are visible, or None
    debugfs_mounted: bool
    host_headers: str | None  # a header tree with include/linux/kconfig.h, or None
    kheaders: bool  # /sys/kernel/kheaders.tar.xz exists
    kheaders_module: bool  # CONFIG_IKHEADERS=m: kheaders.ko is installed but not loaded
    xz: bool  # tar and xz on PATH (bcc runs `tar -xf`)
    tmp_free_bytes: int | None  # free space where bcc unpacks kheaders
    kheaders_unpacked: bool  # $TMPDIR/kheaders-<release> already exists
    placed_headers: str | None  # PLACED_HEADERS/<release>, when it has kconfig.h
    missing_fields: tuple[str, ...] = ()  # tracepoint fields the kernel lacks


@dataclass
class Verdict:
    checks: list[Check]
    header_source: str | None  # "host" | "kheaders" | "placed"
    header_path: str | None  # what BCC_KERNEL_SOURCE is set to (None: let bcc look)
    needs: set[str] = field(default_factory=set)  # e.g. {"sys-admin overlay"}

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def first_failure(self) -> Check | None:
        return next((c for c in self.checks if not c.ok), None)


# --- pure parts -------------------------------------------------------------------------


def parse_kernel(release: str) -> tuple[int, int]:
    """``5.15.0-1019-aws`` → (5, 15); unparsable → (0, 0), which fails every version check."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def parse_capabilities(status_text: str) -> frozenset[str]:
    """The named capabilities in ``CapEff:`` of a ``/proc/<pid>/status`` text."""
    m = re.search(r"^CapEff:\s*([0-9a-fA-F]+)", status_text, re.M)
    mask = int(m.group(1), 16) if m else 0
    return frozenset(name for name, bit in CAP_NUMBERS.items() if mask >> bit & 1)


def parse_memlock(limits_text: str) -> tuple[int | None, int | None]:
    """(soft, hard) RLIMIT_MEMLOCK from a ``/proc/<pid>/limits`` text; None = unlimited."""
    for line in limits_text.splitlines():
        if line.startswith("Max locked memory"):
            soft, hard = line.split()[3:5]
            return (
                None if soft == "unlimited" else int(soft),
                None if hard == "unlimited" else int(hard),
            )
    return None, None


def cgroup_layout(mounts_text: str) -> str:
    """How the node mounts cgroups, from a ``/proc/<pid>/mounts`` text, as systemd decides
    it: cgroup2 at /sys/fs/cgroup is "unified"; v1 hierarchies with a cgroup2 mount beside
    them (systemd's /sys/fs/cgroup/unified) "hybrid"; v1 only "legacy"."""
    v1 = v2_root = v2_other = False
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        if parts[2] == "cgroup2":
            if parts[1] == "/sys/fs/cgroup":
                v2_root = True
            else:
                v2_other = True
        elif parts[2] == "cgroup":
            v1 = True
    if v2_root and not v1:
        return "unified"
    if v1:
        return "hybrid" if (v2_root or v2_other) else "legacy"
    return "unified" if v2_other else "none"


def patched_paranoid(kernel_build: str) -> bool:
    """Debian's and Ubuntu's kernels carry "security,perf: Allow further restriction of
    perf_event_open": with perf_event_paranoid > 2, perf_event_open() fails with EACCES
    unless the caller has CAP_SYS_ADMIN (CAP_PERFMON is not enough). Mainline treats
    values above 2 as 2."""
    return "Debian" in kernel_build or "Ubuntu" in kernel_build


def headers_fix(facts: HostFacts) -> str:
    r, d = facts.release, facts.distro
    if d in ("debian", "ubuntu"):
        return f"apt-get install linux-headers-{r} on the node"
    if d in ("rhel", "rhcos", "centos", "rocky", "almalinux", "fedora", "amzn"):
        return f"dnf install kernel-devel-{r} on the node (yum on Amazon Linux 2)"
    if d in ("azurelinux", "mariner"):
        return f"tdnf install kernel-devel-{r} on the node"
    if d == "cos":
        return "deploy with the COS header overlay: kubectl apply -k deploy-overlays/cos-headers"
    return (
        f"install the headers of {r} on the node (/lib/modules/{r}/build), or boot a "
        "kernel built with CONFIG_IKHEADERS"
    )


def _privilege(f: HostFacts, verdict: Verdict) -> Check:
    what = "privilege for BPF"
    caps = f.capabilities
    admin = "SYS_ADMIN" in caps
    if f.cap_last_cap is None and not admin and not caps & {"BPF", "PERFMON"}:
        # CapEff holds no bit the kernel lacks, so CAP_BPF or CAP_PERFMON held proves the
        # kernel knows them; holding neither, whether they exist is unknown.
        return Check(
            what,
            False,
            "/proc/sys/kernel/cap_last_cap could not be read, so whether this kernel knows "
            "CAP_BPF/CAP_PERFMON is unknown; the agent holds neither them nor CAP_SYS_ADMIN",
            "check that /proc is mounted and readable in the container; then run as root, "
            "or grant BPF and PERFMON (kernels before 5.8: CAP_SYS_ADMIN, "
            f"{SYS_ADMIN_OVERLAY})",
        )
    if f.cap_last_cap is not None and f.cap_last_cap < SPLIT_CAPS:
        if admin:
            return Check(what, True, "CAP_SYS_ADMIN (this kernel predates CAP_BPF/CAP_PERFMON)")
        verdict.needs.add("sys-admin overlay")
        return Check(
            what,
            False,
            f"kernel {f.release} knows no CAP_BPF/CAP_PERFMON (cap_last_cap "
            f"{f.cap_last_cap} < 39; they came in 5.8): loading BPF needs CAP_SYS_ADMIN",
            SYS_ADMIN_OVERLAY,
        )
    if not admin and not {"BPF", "PERFMON"} <= caps:
        lacking = " + ".join(f"CAP_{c}" for c in ("BPF", "PERFMON") if c not in caps)
        not_root = "not root: " if not caps else ""
        return Check(
            what,
            False,
            f"{not_root}{lacking} missing: loading the programs needs CAP_BPF, attaching "
            "them (perf_event_open) CAP_PERFMON",
            "run as root, or grant them: add BPF and PERFMON to the container's capabilities "
            "(setcap cap_bpf,cap_perfmon+ep outside Kubernetes)",
        )
    paranoid = f.perf_event_paranoid
    if paranoid is not None and paranoid > 2 and patched_paranoid(f.kernel_build) and not admin:
        verdict.needs.add("sys-admin overlay")
        return Check(
            what,
            False,
            f"perf_event_paranoid is {paranoid} on a Debian/Ubuntu kernel, whose patch then "
            "allows perf_event_open only with CAP_SYS_ADMIN",
            f"{SYS_ADMIN_OVERLAY}   (or: sysctl -w kernel.perf_event_paranoid=2 on the node)",
        )
    held = "CAP_SYS_ADMIN" if admin else "CAP_BPF + CAP_PERFMON"
    return Check(what, True, f"{held}, perf_event_paranoid {paranoid}")


def _memlock(f: HostFacts, needed: int) -> Check:
    what = "locked-memory limit"
    if f.kernel >= MEMCG_ACCOUNTING:
        return Check(what, True, f"kernel {f.release} charges BPF maps to the memory cgroup")
    soft = "unlimited" if f.memlock_soft is None else f"{f.memlock_soft} B"
    if f.memlock_soft is None or f.memlock_soft >= needed:
        return Check(what, True, f"RLIMIT_MEMLOCK {soft} covers the maps ({needed} B)")
    if f.memlock_hard is None or "SYS_RESOURCE" in f.capabilities:
        return Check(what, True, f"RLIMIT_MEMLOCK {soft}; bcc raises it (CAP_SYS_RESOURCE)")
    return Check(
        what,
        False,
        f"kernel {f.release} charges BPF maps ({needed} B) to RLIMIT_MEMLOCK ({soft}), and "
        "without CAP_SYS_RESOURCE bcc cannot raise it",
        "add SYS_RESOURCE to the container's capabilities (deploy/agent-daemonset.yaml has "
        "it), or run with ulimit -l unlimited",
    )


def _tracefs(f: HostFacts) -> Check:
    if f.tracefs is not None:
        return Check("tracefs", True, f"sched events under {f.tracefs}")
    fix = "mount -t tracefs nodev /sys/kernel/tracing on the node"
    if f.debugfs_mounted:
        fix = "mount the node's /sys/kernel/debug into the pod (deploy/agent-daemonset.yaml does)"
    else:
        fix += (
            ", or mount -t debugfs nodev /sys/kernel/debug (systemd 219, as on Amazon "
            "Linux 2, mounts neither at /sys/kernel/tracing)"
        )
    where = " or ".join(TRACEFS_DIRS)
    return Check("tracefs", False, f"no tracefs with sched events at {where}", fix)


def _fields(f: HostFacts) -> Check:
    what = "scheduler tracepoint fields"
    if f.missing_fields:
        return Check(
            what,
            False,
            f"this kernel's tracepoints lack {', '.join(f.missing_fields)}",
            "a kernel with the standard sched tracepoints (CONFIG_FTRACE) is needed",
        )
    count = sum(len(v) for v in REQUIRED_FIELDS.values())
    return Check(what, True, f"{count} fields present in {f.tracefs}/events/sched")


def _headers(f: HostFacts, verdict: Verdict) -> Check:
    what = "kernel headers"
    if f.host_headers is not None:
        verdict.header_source, verdict.header_path = "host", f.host_headers
        return Check(what, True, f"host: the node's own headers at {f.host_headers}")
    kheaders_problem = ""
    if f.kheaders:
        if not f.xz:
            kheaders_problem = f"{KHEADERS} exists but tar/xz are not in the image"
        elif (
            not f.kheaders_unpacked
            and f.tmp_free_bytes is not None
            and f.tmp_free_bytes < KHEADERS_UNPACKED_BYTES
        ):
            kheaders_problem = (
                f"{KHEADERS} exists but the unpack directory has {f.tmp_free_bytes >> 20} MiB "
                f"free, {KHEADERS_UNPACKED_BYTES >> 20} MiB needed"
            )
        else:
            verdict.header_source = "kheaders"
            into = f"$TMPDIR/kheaders-{f.release}"
            return Check(what, True, f"kheaders: {KHEADERS} (bcc unpacks it into {into})")
    if f.placed_headers is not None:
        verdict.header_source, verdict.header_path = "placed", f.placed_headers
        return Check(what, True, f"placed: headers put on the node at {f.placed_headers}")
    if kheaders_problem:
        return Check(
            what,
            False,
            kheaders_problem,
            "use an image with xz-utils, and size /tmp (deploy/agent-daemonset.yaml does)",
        )
    if f.kheaders_module:
        return Check(
            what,
            False,
            f"no headers for {f.release}; the kernel has them as the kheaders module, not loaded",
            "modprobe kheaders on the node (it provides /sys/kernel/kheaders.tar.xz)",
        )
    return Check(
        what,
        False,
        f"no headers for {f.release}: not on the node, no {KHEADERS}, none placed at "
        f"{PLACED_HEADERS}/{f.release}",
        headers_fix(f),
    )


def _cgroup_mode(f: HostFacts) -> Check:
    what = "cgroup mode"
    if f.kernel < CGROUP_ID_IS_INODE:
        return Check(
            what,
            False,
            f"kernel {f.release} predates 5.5: bpf_get_current_cgroup_id() does not return "
            "the cgroup's inode number, so no id could be named",
            "--collector.sched.mode=watched",
        )
    if f.cgroup_layout != "unified":
        return Check(
            what,
            False,
            f"the node's cgroups are {f.cgroup_layout}, not pure cgroup v2: the probe sees "
            "only the v2 hierarchy, where containers of a v1 runtime are not, so their "
            "tasks would be filed under systemd units or the root",
            "boot the node with systemd.unified_cgroup_hierarchy=1, or "
            "--collector.sched.mode=watched",
        )
    return Check(what, True, "pure cgroup v2")


def preflight(facts: HostFacts, mode: str = "watched", map_bytes: int = 0) -> Verdict:
    """The verdict for these facts: every check, the header source bcc will use, and which
    deployment variant the node needs. ``map_bytes``: what the probe's maps take."""
    verdict = Verdict([], None, None)
    checks = verdict.checks
    checks.append(_privilege(facts, verdict))
    checks.append(_memlock(facts, map_bytes))
    checks.append(_tracefs(facts))
    if facts.tracefs is not None:
        checks.append(_fields(facts))
    checks.append(_headers(facts, verdict))
    if mode == "cgroup":
        checks.append(_cgroup_mode(facts))
    return verdict


def with_capabilities(facts: HostFacts, caps: set[str] | frozenset[str]) -> HostFacts:
    """The same node with another effective capability set (a manifest's)."""
    return replace(facts, capabilities=frozenset(caps))


# --- the shell: facts from the real host ------------------------------------------------


@dataclass(frozen=True)
class HostPaths:
    """Where the facts are read; tests point these at fixture trees or a private mount."""

    proc: str = "/proc"
    sys: str = "/sys"
    host_root: str = "/"  # the node's root filesystem (mounted at /host in the pod)
    tmpdir: str | None = None  # where bcc unpacks kheaders ($TMPDIR, else /tmp)
    which: Callable[[str], str | None] = shutil.which


def resolve_in(root: str, path: str, depth: int = 0) -> str | None:
    """``path`` resolved as if ``root`` were ``/``: absolute symlink targets (such as
    ``/lib/modules/<r>/build -> /usr/src/linux-headers-<r>``) stay inside ``root``.
    Returns the real path on this filesystem, or None when a component is missing."""
    if depth > 40:
        return None  # a symlink loop
    cur = root.rstrip("/") or "/"
    parts = [p for p in path.split("/") if p and p != "."]
    while parts:
        name = parts.pop(0)
        if name == "..":
            if cur != (root.rstrip("/") or "/"):
                cur = os.path.dirname(cur)
            continue
        nxt = os.path.join(cur, name)
        if os.path.islink(nxt):
            target = os.readlink(nxt)
            rest = "/".join(parts)
            if target.startswith("/"):
                return resolve_in(root, f"{target}/{rest}", depth + 1)
            inner = os.path.relpath(cur, root) if cur != root else ""
            return resolve_in(root, f"/{inner}/{target}/{rest}", depth + 1)
        if not os.path.lexists(nxt):
            return None
        cur = nxt
    return cur


def host_header_tree(host_root: str, release: str) -> tuple[str, str | None] | None:
    """The node's header tree for ``release`` as (build, source) real paths (source only
    where the distribution splits them, as Debian and Ubuntu do), or None when neither has
    ``include/linux/kconfig.h``."""
    base = f"/lib/modules/{release}"
    build = resolve_in(host_root, f"{base}/build")
    source = resolve_in(host_root, f"{base}/source")
    if build is None or not os.path.isdir(build):
        return None
    if (
        source is not None
        and source != build
        and os.path.isfile(f"{source}/include/linux/kconfig.h")
    ):
        return build, source
    if os.path.isfile(f"{build}/include/linux/kconfig.h"):
        return build, None
    return None


def merge_header_trees(build: str, source: str, dest: str) -> str:
    """A view of a split header tree (build/ generated, source/ common) as the one tree
    ``BCC_KERNEL_SOURCE`` must name: symlinks to ``build`` first, then ``source``, with
    directories present in both merged (about 60 links for Debian's headers)."""
    os.makedirs(dest, exist_ok=True)
    names = set(os.listdir(build)) | set(os.listdir(source))
    for name in sorted(names):
        b, s, d = f"{build}/{name}", f"{source}/{name}", f"{dest}/{name}"
        if os.path.isdir(b) and os.path.isdir(s) and not os.path.islink(b):
            merge_header_trees(b, s, d)
            continue
        target = b if os.path.lexists(b) else s
        if os.path.islink(d) or os.path.lexists(d):
            if os.path.islink(d) and os.readlink(d) == target:
                continue
            os.unlink(d)
        os.symlink(target, d)
    return dest


def fresh_header_view(
    build: str, source: str, parent: str, release: str, previous: str | None = None
) -> str:
    """:func:`merge_header_trees` into a new directory under ``parent``, then ``previous``
    (the view this agent built before) removed.

    Never a fixed path reused: :func:`merge_header_trees` only adds and replaces links, so
    a view kept across a header upgrade would still hold links to what the old layout had
    (bcc would find a header that no longer belongs to the kernel), and a fixed name in a
    shared /tmp could be made in advance by someone else.
    """
    dest = tempfile.mkdtemp(prefix=f"vigil-kernel-headers-{release}-", dir=parent)
    try:
        merge_header_trees(build, source, dest)
    except OSError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    if previous is not None and previous != dest:
        shutil.rmtree(previous, ignore_errors=True)  # links only: nothing is followed
    return dest


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _int(path: str) -> int | None:
    text = _read(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def _os_release_id(text: str | None) -> str:
    for line in (text or "").splitlines():
        key, _, value = line.partition("=")
        if key == "ID":
            return value.strip().strip('"')
    return ""


def _exists(path: str) -> bool:
    try:
        return os.path.exists(path)
    except OSError:
        return False


def gather(
    paths: HostPaths | None = None, release: str | None = None, pid: str = "self"
) -> tuple[HostFacts, tuple[str, str | None] | None]:
    """The facts of this host, plus the header tree found (for the loader to use)."""
    p = paths or HostPaths()
    release = release or os.uname().release
    host = p.host_root.rstrip("/") or "/"
    status = _read(f"{p.proc}/{pid}/status") or ""
    soft, hard = parse_memlock(_read(f"{p.proc}/{pid}/limits") or "")
    # The node's mounts are those of its init (the pod shares the host PID namespace);
    # this process's own are the fallback outside a container.
    mounts = _read(f"{p.proc}/1/mounts") or _read(f"{p.proc}/self/mounts") or ""
    tracefs = next(
        (
            d
            for d in TRACEFS_DIRS
            if _exists(f"{p.sys}{d.removeprefix('/sys')}/events/sched/sched_switch")
        ),
        None,
    )
    tree = host_header_tree(host, release)
    placed = os.path.join(host, PLACED_HEADERS.lstrip("/"), release)
    tmp = p.tmpdir or os.environ.get("TMPDIR") or "/tmp"
    try:
        st = os.statvfs(tmp)
        free: int | None = st.f_bavail * st.f_frsize
    except OSError:
        free = None
    modules = os.path.join(host, "lib/modules", release, "kernel/kernel")
    facts = HostFacts(
        release=release,
        kernel=parse_kernel(release),
        kernel_build=(_read(f"{p.proc}/version") or "").strip(),
        distro=_os_release_id(
            _read(os.path.join(host, "etc/os-release"))
            or _read(os.path.join(host, "usr/lib/os-release"))
        ),
        cap_last_cap=_int(f"{p.proc}/sys/kernel/cap_last_cap"),
        perf_event_paranoid=_int(f"{p.proc}/sys/kernel/perf_event_paranoid"),
        capabilities=parse_capabilities(status),
        memlock_soft=soft,
        memlock_hard=hard,
        cgroup_layout=cgroup_layout(mounts),
        tracefs=tracefs,
        debugfs_mounted=any(line.split()[2:3] == ["debugfs"] for line in mounts.splitlines()),
        host_headers=tree[0] if tree else None,
        kheaders=_exists(f"{p.sys}/kernel/kheaders.tar.xz"),
        kheaders_module=any(
            _exists(f"{modules}/kheaders.ko{ext}") for ext in ("", ".xz", ".zst", ".gz")
        ),
        xz=p.which("tar") is not None and p.which("xz") is not None,
        tmp_free_bytes=free,
        kheaders_unpacked=_exists(f"{tmp}/kheaders-{release}"),
        placed_headers=placed if os.path.isfile(f"{placed}/include/linux/kconfig.h") else None,
    )
    return facts, tree
