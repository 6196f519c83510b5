"""The workload that owns a watched process's pod: derived from the pod alone, so that the
rollback alerts can name the Deployment (namespace + workload) the default policy acts on."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from kubernetes.client import V1ObjectMeta, V1OwnerReference, V1Pod
from prometheus_client import CollectorRegistry

from agent import kube
from agent.discovery import Discovery

UID = "0f6a1a52-2c1e-4b7a-9a53-8e3c2f1d4b01"
CID = "a" * 64


def ref(kind: str, name: str, controller: bool | None = True) -> dict[str, object]:
    out: dict[str, object] = {"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "u"}
    if controller is not None:
        out["controller"] = controller
    return out


@pytest.mark.parametrize(
    ("refs", "labels", "want"),
    [
        # A Deployment's pod: ReplicaSet "<deployment>-<pod-template-hash>".
        ([ref("ReplicaSet", "fraud-7d9c8b5f4")], {"pod-template-hash": "7d9c8b5f4"},
         ("Deployment", "fraud")),
        ([ref("ReplicaSet", "my-llm-v2-5f6d")], {"pod-template-hash": "5f6d"},
         ("Deployment", "my-llm-v2")),
        # A bare ReplicaSet (no hash, or a name that does not end in it) is not guessed at.
        ([ref("ReplicaSet", "legacy")], {}, ("ReplicaSet", "legacy")),
        ([ref("ReplicaSet", "legacy-abc")], {"pod-template-hash": "xyz"},
         ("ReplicaSet", "legacy-abc")),
        ([ref("ReplicaSet", "5f6d")], {"pod-template-hash": "5f6d"}, ("ReplicaSet", "5f6d")),
        ([ref("StatefulSet", "vllm")], {}, ("StatefulSet", "vllm")),
        ([ref("DaemonSet", "agent")], {"pod-template-hash": "zz"}, ("DaemonSet", "agent")),
        ([ref("Job", "batch-1")], {}, ("Job", "batch-1")),
        # Only the controller reference counts; a bare pod has no workload.
        ([ref("ConfigMap", "x", controller=None), ref("StatefulSet", "s")], {},
         ("StatefulSet", "s")),
        ([ref("ReplicaSet", "a-h", controller=False)], {"pod-template-hash": "h"}, ("", "")),
        ([], {}, ("", "")),
        (None, {}, ("", "")),
    ],
)  # fmt: skip
def test_owning_workload(
    refs: list[dict[str, object]] | None, labels: dict[str, str], want: tuple[str, str]
) -> None:
    assert kube.owning_workload(refs, labels) == want


def test_client_models_and_raw_json_give_the_same_owner() -> None:
    model = V1Pod(
        metadata=V1ObjectMeta(
            name="fraud-7d9c8b5f4-x2x9z",
            namespace="inference",
            uid=UID,
            labels={"app": "fraud", "pod-template-hash": "7d9c8b5f4"},
            owner_references=[
                V1OwnerReference(
                    api_version="apps/v1",
                    kind="ReplicaSet",
                    name="fraud-7d9c8b5f4",
                    uid="rs",
                    controller=True,
                )
            ],
        )
    )
    raw = {
        "metadata": {
            "name": "fraud-7d9c8b5f4-x2x9z",
            "namespace": "inference",
            "uid": UID,
            "labels": {"app": "fraud", "pod-template-hash": "7d9c8b5f4"},
            "ownerReferences": [ref("ReplicaSet", "fraud-7d9c8b5f4")],
        }
    }
    for pod in (model, raw):
        entry = kube.pod_entry(pod)
        assert entry is not None
        assert (entry.workload_kind, entry.workload) == ("Deployment", "fraud")


class Resolver:
    """A PodWatcher after its list: the same lookup/owner as kube.PodWatcher answers."""

    def __init__(self) -> None:
        self.watcher = kube.PodWatcher(api=None, node_name="n")
        entry = kube.pod_entry(
            {
                "metadata": {
                    "name": "fraud-7d9c8b5f4-x2x9z",
                    "namespace": "inference",
                    "uid": UID,
                    "labels": {"pod-template-hash": "7d9c8b5f4"},
                    "ownerReferences": [ref("ReplicaSet", "fraud-7d9c8b5f4")],
                },
                "status": {
                    "containerStatuses": [{"name": "server", "containerID": f"containerd://{CID}"}]
                },
            }
        )
        assert entry is not None
        self.watcher._pods = {UID: entry}

    def lookup(self, pod_uid: str) -> tuple[str, str, Mapping[str, str]] | None:
        return self.watcher.lookup(pod_uid)

    def owner(self, pod_uid: str) -> tuple[str, str]:
        return self.watcher.owner(pod_uid)


def test_watched_process_info_names_the_owning_deployment(tmp_path: Path) -> None:
    proc = tmp_path / "proc" / "4242"
    proc.mkdir(parents=True)
    (proc / "cmdline").write_bytes(b"python3\0-m\0vllm.entrypoints.openai.api_server\0")
    (proc / "comm").write_text("python3\n")
    (proc / "stat").write_text("4242 (python3) S " + " ".join(["0"] * 18) + " 777 0 0\n")
    uid = UID.replace("-", "_")
    (proc / "cgroup").write_text(
        f"0::/kubepods.slice/kubepods-pod{uid}.slice/cri-containerd-{CID}.scope\n"
    )
    d = Discovery(procfs=str(tmp_path / "proc"), patterns=["vllm"], resolver=Resolver(), self_pid=1)
    d.refresh()
    reg = CollectorRegistry()
    reg.register(d)  # type: ignore[arg-type]
    labels = {
        "pid": "4242",
        "comm": "python3",
        "pod": "fraud-7d9c8b5f4-x2x9z",
        "namespace": "inference",
        "container": "server",
        "pod_uid": UID,
        "container_id": CID,
        "source": "watch",
        "workload_kind": "Deployment",
        "workload": "fraud",
    }
    assert reg.get_sample_value("vigil_watched_process_info", labels) == 1.0
