"""parse_cgroup against cgroup files as they appear on real nodes."""

from __future__ import annotations

import pytest

from agent.discovery import CgroupIdentity, parse_cgroup, parse_stat_start_time

UID = "0f4b5c6e-9c3a-4b1e-8d2f-1a2b3c4d5e6f"
UID_ = UID.replace("-", "_")
CID = "4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091"
STATIC_UID = "6f1d3e0c2b7a49588f2c7e1d0a9b3c4d"

CASES = [
    # (name, file contents, pod_uid, container_id, runtime)
    (
        "v2 systemd containerd (GKE, EKS AL2023)",
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"cri-containerd-{CID}.scope\n",
        UID,
        CID,
        "containerd",
    ),
    (
        "v2 systemd CRI-O (OpenShift 4)",
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
        f"crio-{CID}.scope\n",
        UID,
        CID,
        "cri-o",
    ),
    (
        "v2 systemd guaranteed QoS (no QoS slice)",
        f"0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
        UID,
        CID,
        "containerd",
    ),
    ("v2 cgroupfs containerd (k3s)", f"0::/kubepods/burstable/pod{UID}/{CID}\n", UID, CID, ""),
    (
        "v2 systemd docker via cri-dockerd",
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"docker-{CID}.scope\n",
        UID,
        CID,
        "docker",
    ),
    (
        "v2 kind node (kubelet.slice nesting)",
        f"0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
        f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
        UID,
        CID,
        "containerd",
    ),
    (
        "v1 cgroupfs docker (older kubeadm)",
        "12:pids:/kubepods/besteffort/pod" + UID + "/" + CID + "\n"
        "11:memory:/kubepods/besteffort/pod" + UID + "/" + CID + "\n"
        "1:name=systemd:/kubepods/besteffort/pod" + UID + "/" + CID + "\n"
        "0::/\n",
        UID,
        CID,
        "",
    ),
    (
        "v1 systemd containerd (hybrid hierarchy)",
        f"12:cpu,cpuacct:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}"
        f".slice/cri-containerd-{CID}.scope\n"
        f"1:name=systemd:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}"
        f".slice/cri-containerd-{CID}.scope\n0::/\n",
        UID,
        CID,
        "containerd",
    ),
    ("v1 guaranteed pod, cgroupfs", f"4:cpuset:/kubepods/pod{UID}/{CID}\n", UID, CID, ""),
    ("v1 cgroupfs CRI-O", f"3:memory:/kubepods/burstable/pod{UID}/crio-{CID}\n", UID, CID, "cri-o"),
    (
        "static (mirror) pod with a config-hash uid",
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/"
        f"cri-containerd-{CID}.scope\n",
        STATIC_UID,
        CID,
        "containerd",
    ),
    ("plain docker, v2 systemd", f"0::/system.slice/docker-{CID}.scope\n", "", CID, "docker"),
    (
        "plain docker, v1 cgroupfs",
        f"13:memory:/docker/{CID}\n12:cpu:/docker/{CID}\n",
        "",
        CID,
        "docker",
    ),
    ("podman rootful", f"0::/machine.slice/libpod-{CID}.scope/container\n", "", CID, "podman"),
    (
        "podman rootless",
        f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope/"
        "container\n",
        "",
        CID,
        "podman",
    ),
    (
        "CRI-O conmon is not a container",
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"crio-conmon-{CID}.scope\n",
        UID,
        "",
        "cri-o",
    ),
    (
        "pod-level cgroup (pause/sandbox process)",
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice\n",
        UID,
        "",
        "",
    ),
    (
        "host process in a login session",
        "0::/user.slice/user-0.slice/session-3.scope\n",
        "",
        "",
        "",
    ),
    ("host systemd service", "0::/system.slice/nvidia-persistenced.service\n", "", "", ""),
    ("container with its own cgroup namespace", "0::/\n", "", "", ""),
]


@pytest.mark.parametrize(
    ("name", "text", "uid", "cid", "runtime"), CASES, ids=[c[0] for c in CASES]
)
def test_real_world_shapes(name: str, text: str, uid: str, cid: str, runtime: str) -> None:
    got = parse_cgroup(text)
    assert (got.pod_uid, got.container_id, got.runtime) == (uid, cid, runtime)
    assert not got.unknown_shape


def test_many_shapes_covered() -> None:
    assert len(CASES) >= 12


@pytest.mark.parametrize(
    "text",
    [
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podNOTAUID.slice/x\n",
        "0::/kubepods/burstable/pod12345/abc\n",
    ],
)
def test_kubepods_path_of_unknown_shape_is_flagged(text: str) -> None:
    assert parse_cgroup(text) == CgroupIdentity(unknown_shape=True)


@pytest.mark.parametrize("text", ["", "garbage", "::\n", "\n\n", "a:b\n"])
def test_malformed_input_yields_nothing(text: str) -> None:
    assert parse_cgroup(text) == CgroupIdentity()


def test_start_time_survives_parentheses_and_spaces_in_comm() -> None:
    fields = ["S"] + [str(i) for i in range(4, 22)] + ["987654"] + ["0"] * 30
    stat = "4242 (we) ird (name) " + " ".join(fields)
    assert parse_stat_start_time(stat) == 987654
