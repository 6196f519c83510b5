"""The node images GPU clusters run, as the facts the sched preflight decides on.

One fixture per row of docs/compatibility.md (its "fixture" column names the key here).
Each fact carries its source; "unconfirmed" marks a value the row's verdict does not hang
on. ``capabilities`` is left empty: the tests give each fixture the capability set of
the manifest the row names (deploy/agent-daemonset.yaml, or with an overlay).
"""

from __future__ import annotations

from dataclasses import replace

from agent.collectors.sched.preflight import HostFacts

# RLIMIT_MEMLOCK as containers inherit it where nothing raises it: the kernel's default
# MLOCK_LIMIT, 64 KiB before 5.16 (include/uapi/linux/resource.h). It matters only on the
# kernels that charge BPF maps to it (before 5.11).
MEMLOCK_64K = 65536

_BASE = HostFacts(
    release="",
    kernel=(0, 0),
    kernel_build="",
    distro="",
    cap_last_cap=40,  # 5.9+: CAP_CHECKPOINT_RESTORE (40) is the last
    perf_event_paranoid=2,  # mainline default (kernel/events/core.c)
    capabilities=frozenset(),
    memlock_soft=MEMLOCK_64K,
    memlock_hard=MEMLOCK_64K,
    cgroup_layout="unified",
    tracefs="/sys/kernel/tracing",
    debugfs_mounted=True,
    host_headers=None,
    kheaders=False,
    kheaders_module=False,
    xz=True,  # the image installs xz-utils (scripts/setup.sh)
    tmp_free_bytes=128 * 2**20,  # the DaemonSet's /tmp emptyDir sizeLimit
    kheaders_unpacked=False,
    placed_headers=None,
)


def image(**facts: object) -> HostFacts:
    return replace(_BASE, **facts)  # type: ignore[arg-type]


NODE_IMAGES: dict[str, HostFacts] = {
    # Ubuntu 22.04 (GKE/AKS/EKS Ubuntu node pools): 5.15; kernel.perf_event_paranoid=4
    # set by Ubuntu's kernel (Ubuntu's "perf: Restrict perf_event_open" patch, as Debian's;
    # askubuntu.com/q/1400874); cgroup v2 by default since 21.10; linux-headers installed
    # on the cloud images (they build DKMS modules).
    "ubuntu-22.04": image(
        release="5.15.0-1019-aws",
        kernel=(5, 15),
        kernel_build="Linux version 5.15.0-1019-aws (buildd@lcy02-amd64-040) #23-Ubuntu SMP",
        distro="ubuntu",
        perf_event_paranoid=4,
        host_headers="/usr/src/linux-headers-5.15.0-1019-aws",
    ),
    # Ubuntu 24.04: 6.8, paranoid 4 as above. Whether its patch accepts CAP_PERFMON is
    # unconfirmed, so the preflight asks for CAP_SYS_ADMIN as on 22.04.
    "ubuntu-24.04": image(
        release="6.8.0-1015-gcp",
        kernel=(6, 8),
        kernel_build="Linux version 6.8.0-1015-gcp (buildd@lcy02-amd64-048) #17-Ubuntu SMP",
        distro="ubuntu",
        perf_event_paranoid=4,
        host_headers="/usr/src/linux-headers-6.8.0-1015-gcp",
    ),
    # Debian 12: 6.1; paranoid 3 (Debian's kernel default,
    # debian/patches/features/all/security-perf-allow-further-restriction-of-perf_event_open.patch);
    # cgroup v2 (systemd 252 default); headers from linux-headers-<release>.
    "debian-12": image(
        release="6.1.0-57-amd64",
        kernel=(6, 1),
        kernel_build="Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org) #1 SMP "
        "PREEMPT_DYNAMIC Debian 6.1.158-1",
        distro="debian",
        perf_event_paranoid=3,
        host_headers="/usr/src/linux-headers-6.1.0-57-amd64",
    ),
    # Ubuntu 20.04: 5.4, so cap_last_cap 37 (CAP_AUDIT_READ; BPF/PERFMON came in 5.8);
    # paranoid 4; cgroup v1 (hybrid, systemd 245); maps charged to RLIMIT_MEMLOCK (< 5.11).
    "ubuntu-20.04": image(
        release="5.4.0-1103-aws",
        kernel=(5, 4),
        kernel_build="Linux version 5.4.0-1103-aws (buildd@lcy02-amd64-053) #111-Ubuntu SMP",
        distro="ubuntu",
        cap_last_cap=37,
        perf_event_paranoid=4,
        cgroup_layout="hybrid",
        host_headers="/usr/src/linux-headers-5.4.0-1103-aws",
    ),
    # RHEL 8 / RHCOS <= 4.12: 4.18 (cap_last_cap 37 as mainline 4.18 numbers them; a
    # backport that reports 39 passes with BPF + PERFMON, since the preflight reads the
    # number); paranoid 2; cgroup v1 (legacy); kernel-devel in /usr/src/kernels/<release>.
    "rhel-8": image(
        release="4.18.0-372.9.1.el8.x86_64",
        kernel=(4, 18),
        kernel_build="Linux version 4.18.0-372.9.1.el8.x86_64 (mockbuild@x86-vm-07.build."
        "eng.bos.redhat.com) #1 SMP",
        distro="rhel",
        cap_last_cap=37,
        cgroup_layout="legacy",
        host_headers="/usr/src/kernels/4.18.0-372.9.1.el8.x86_64",
    ),
    # Amazon Linux 2 (EKS AL2 AMIs): 5.10; systemd 219 mounts debugfs but never
    # /sys/kernel/tracing (systemd#14916), so tracefs is reached through debugfs; cgroup v1;
    # RLIMIT_MEMLOCK charged (< 5.11). kernel-devel: the EKS AMI build installs it
    # (unconfirmed for every AMI; `vigil doctor` says when it is missing).
    "amazon-linux-2": image(
        release="5.10.227-219.884.amzn2.x86_64",
        kernel=(5, 10),
        kernel_build="Linux version 5.10.227-219.884.amzn2.x86_64 (mockbuild@ip-10-0-55-34)",
        distro="amzn",
        cgroup_layout="legacy",
        tracefs="/sys/kernel/debug/tracing",
        host_headers="/usr/src/kernels/5.10.227-219.884.amzn2.x86_64",
    ),
    # Google COS (GKE default): 6.1 on COS 109+; no headers on the node, no
    # CONFIG_IKHEADERS; headers are kernel-headers.tgz per build
    # (inspektor-gadget#131), placed by deploy-overlays/cos-headers; cgroup v2 (GKE 1.26+).
    "cos": image(
        release="6.1.100+",
        kernel=(6, 1),
        kernel_build="Linux version 6.1.100+ (builder@a3f1c7b2) #1 SMP PREEMPT_DYNAMIC",
        distro="cos",
    ),
    # Flatcar: 6.6; no headers on the node, CONFIG_IKHEADERS=m: /sys/kernel/kheaders.tar.xz
    # appears once the kheaders module is loaded (the agent cannot load modules).
    "flatcar": image(
        release="6.6.60-flatcar",
        kernel=(6, 6),
        kernel_build="Linux version 6.6.60-flatcar (build@pony-truck.infra.kinvolk.io)",
        distro="flatcar",
        kheaders_module=True,
    ),
    # Bottlerocket: 6.1; kernel-devel is shipped and mounted at /usr/src/kernels
    # (unconfirmed for every variant); cgroup v2.
    "bottlerocket": image(
        release="6.1.115",
        kernel=(6, 1),
        kernel_build="Linux version 6.1.115 (builder@buildkitsandbox)",
        distro="bottlerocket",
        host_headers="/usr/src/kernels/6.1.115",
    ),
    # Amazon Linux 2023: 6.1; cgroup v2; kernel-devel not installed by default.
    "amazon-linux-2023": image(
        release="6.1.112-124.190.amzn2023.x86_64",
        kernel=(6, 1),
        kernel_build="Linux version 6.1.112-124.190.amzn2023.x86_64 (mockbuild@ip-10-0-38-31)",
        distro="amzn",
    ),
    # Azure Linux 2 (AKS): 5.15; cgroup v2 on AKS 1.25+; kernel-devel not installed.
    "azure-linux": image(
        release="5.15.167.1-1.cm2",
        kernel=(5, 15),
        kernel_build="Linux version 5.15.167.1-1.cm2 (root@CBL-Mariner)",
        distro="mariner",
    ),
    # RHEL 9 / RHCOS 4.13+: 5.14 (CAP_BPF/PERFMON backported: cap_last_cap 40); cgroup v2
    # on RHCOS 4.14+; kernel-devel installed.
    "rhel-9": image(
        release="5.14.0-427.13.1.el9_4.x86_64",
        kernel=(5, 14),
        kernel_build="Linux version 5.14.0-427.13.1.el9_4.x86_64 (mockbuild@x86-64-01.build."
        "eng.rdu2.redhat.com)",
        distro="rhel",
        host_headers="/usr/src/kernels/5.14.0-427.13.1.el9_4.x86_64",
    ),
}
