"""The pod watcher: pod UIDs from cgroups become pod names, through a real Kubernetes client
talking to a local API server (list, chunked watch, 410 Gone, outages)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakekube import FakeKubeAPI, make_pod
from kubernetes.client import V1ContainerStatus, V1ObjectMeta, V1Pod, V1PodStatus

from agent import kube
from agent.collectors import SPECS
from agent.config import ConfigError, resolve
from agent.discovery import Discovery

NODE = "gpu-node-1"
UID_A = "0f6a1a52-2c1e-4b7a-9a53-8e3c2f1d4b01"
UID_B = "5d2c3e4f-1111-4a2b-8c3d-4e5f6a7b8c9d"
UID_OTHER = "99999999-8888-4777-8666-555544443333"
CID_A = "a" * 64
CID_A2 = "b" * 64


def wait(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


# --- pure parts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "bare"),
    [
        ("containerd://" + CID_A, CID_A),
        ("cri-o://" + CID_A, CID_A),
        ("docker://" + CID_A, CID_A),
        ("cri-containerd://" + CID_A, CID_A),
        ("someruntime://" + CID_A, CID_A),
        (CID_A, CID_A),
        ("", ""),
    ],
)
def test_strip_container_id(raw: str, bare: str) -> None:
    assert kube.strip_container_id(raw) == bare


def test_pod_entry_from_raw_json_and_client_model_agree() -> None:
    raw = make_pod("vllm-0", "serving", UID_A, NODE, {"server": CID_A, "sidecar": CID_A2})
    model = V1Pod(
        metadata=V1ObjectMeta(name="vllm-0", namespace="serving", uid=UID_A),
        status=V1PodStatus(
            container_statuses=[
                V1ContainerStatus(
                    name="server",
                    container_id="containerd://" + CID_A,
                    image="i",
                    image_id="",
                    ready=True,
                    restart_count=0,
                ),
                V1ContainerStatus(
                    name="sidecar",
                    container_id="containerd://" + CID_A2,
                    image="i",
                    image_id="",
                    ready=True,
                    restart_count=0,
                ),
            ]
        ),
    )
    want = kube.PodEntry(UID_A, "vllm-0", "serving", {CID_A: "server", CID_A2: "sidecar"})
    assert kube.pod_entry(raw) == want
    assert kube.pod_entry(model) == want


def test_pod_entry_skips_containers_not_started_and_pods_without_uid() -> None:
    pod = make_pod("p", "ns", UID_A, NODE, {"server": CID_A})
    waiting = {"name": "waiting", "ready": False, "restartCount": 0, "image": "i", "imageID": ""}
    pod["status"]["containerStatuses"].append(waiting)
    init = {**waiting, "name": "init", "containerID": "cri-o://" + "c" * 64}
    pod["status"]["initContainerStatuses"] = [init]
    entry = kube.pod_entry(pod)
    assert entry is not None
    assert entry.containers == {CID_A: "server", "c" * 64: "init"}
    no_uid = make_pod("p", "ns", "", NODE)
    assert kube.pod_entry(no_uid) is None
    assert kube.pod_entry({}) is None


def test_apply_event_kinds() -> None:
    pods: dict[str, kube.PodEntry] = {}
    kube.apply_event(pods, "ADDED", make_pod("a", "ns", UID_A, NODE))
    kube.apply_event(pods, "MODIFIED", make_pod("a", "ns", UID_A, NODE, {"c": CID_A}))
    assert pods[UID_A].containers == {CID_A: "c"}
    kube.apply_event(pods, "BOOKMARK", {"metadata": {"resourceVersion": "7"}})
    kube.apply_event(pods, "DELETED", make_pod("a", "ns", UID_A, NODE))
    assert pods == {}


# --- from_config ---------------------------------------------------------------------------


def config(**values: str):  # type: ignore[no-untyped-def]
    return resolve(
        SPECS, flag_values={f"kubernetes.{k.replace('_', '-')}": v for k, v in values.items()}
    )


def test_off_and_auto_outside_a_cluster_mean_no_watcher() -> None:
    assert kube.from_config(config(mode="off", node_name=NODE), environ={}) is None
    assert kube.from_config(config(node_name=NODE), environ={}) is None


def test_on_without_node_name_is_a_clear_error() -> None:
    with pytest.raises(
        ConfigError, match=r"kubernetes.node-name is empty.*VIGIL_KUBERNETES_NODE_NAME"
    ):
        kube.from_config(config(mode="on"), environ={})


def test_bad_kubeconfig_is_an_error_when_on_and_one_log_line_when_auto(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("this: [is not a kubeconfig")
    with pytest.raises(ConfigError, match=r"cannot load Kubernetes credentials from .*kubeconfig"):
        kube.from_config(config(mode="on", node_name=NODE, kubeconfig=str(bad)), environ={})
    caplog.set_level(logging.WARNING, logger="vigil.kube")
    assert kube.from_config(config(node_name=NODE, kubeconfig=str(bad)), environ={}) is None
    assert any("pod names disabled" in r.message for r in caplog.records)


def test_in_cluster_without_service_account_files_is_reported_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # KUBERNETES_SERVICE_HOST set but no token mounted: auto must not crash the agent.
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "1"}
    caplog.set_level(logging.WARNING, logger="vigil.kube")
    import os

    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        assert kube.from_config(config(node_name=NODE), environ=env) is None
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert any("in-cluster" in str(r.__dict__.get("reason")) for r in caplog.records)


# --- against the local API server ----------------------------------------------------------


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as server:
        yield server


@pytest.fixture
def watcher(api: FakeKubeAPI, tmp_path: Path) -> Iterator[kube.PodWatcher]:
    api.put(make_pod("vllm-0", "serving", UID_A, NODE, {"server": CID_A}))
    api.put(make_pod("elsewhere", "serving", UID_OTHER, "gpu-node-2", {"server": "d" * 64}))
    cfg = config(mode="on", node_name=NODE, kubeconfig=str(api.kubeconfig(tmp_path / "kc")))
    w = kube.from_config(cfg, environ={})
    assert w is not None
    w.backoff_first, w.backoff_max = 0.05, 0.2  # outages in these tests last a second
    w.start()
    assert w.wait_listed(10)
    yield w
    w.close()


def test_lists_only_this_nodes_pods_with_the_node_field_selector(
    api: FakeKubeAPI, watcher: kube.PodWatcher
) -> None:
    assert watcher.lookup(UID_A) == ("vllm-0", "serving", {CID_A: "server"})
    assert watcher.lookup(UID_OTHER) is None
    selectors = {q.get("fieldSelector", [""])[0] for path, q in api.requests}
    assert selectors == {f"spec.nodeName={NODE}"}
    assert api.authorization == {"Bearer test-token"}  # the kubeconfig's credentials


def test_watch_events_update_the_map(api: FakeKubeAPI, watcher: kube.PodWatcher) -> None:
    api.wait_for("watch_calls", 1)
    api.put(make_pod("worker-1", "batch", UID_B, NODE))
    wait(lambda: watcher.lookup(UID_B) is not None)
    assert watcher.lookup(UID_B) == ("worker-1", "batch", {})
    # The container id appears in status only once the container runs.
    api.put(make_pod("worker-1", "batch", UID_B, NODE, {"main": CID_A2}))
    wait(lambda: watcher.lookup(UID_B) == ("worker-1", "batch", {CID_A2: "main"}))
    api.delete(UID_A)
    wait(lambda: watcher.lookup(UID_A) is None)
    assert api.list_calls == 1


def test_expired_watch_lists_again_and_misses_nothing(
    api: FakeKubeAPI, watcher: kube.PodWatcher
) -> None:
    api.wait_for("watch_calls", 1)
    with api._lock:  # changes the watch never hears of (its history was compacted)…
        api.pods[UID_B] = make_pod("late", "serving", UID_B, NODE)
        del api.pods[UID_A]
        api.resource_version += 2
    api.expire_watches()  # …then 410 Gone as an ERROR event on the open watch
    api.wait_for("list_calls", 2)
    wait(lambda: watcher.lookup(UID_B) is not None and watcher.lookup(UID_A) is None)
    # 410 Gone as the HTTP status of a new watch request lists again too.
    api.wait_for("watch_calls", 2)
    with api._lock:
        api.pods[UID_A] = make_pod("again", "serving", UID_A, NODE)
        api.resource_version += 1
        api.gone_below = api.resource_version  # the old watch's version is now too old
    api.close_watches()
    api.wait_for("list_calls", 3)
    wait(lambda: watcher.lookup(UID_A) == ("again", "serving", {}))
    assert watcher.errors == 0  # an expiry is routine, not an error


def test_api_down_keeps_the_last_map_and_logs_once(
    api: FakeKubeAPI, watcher: kube.PodWatcher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vigil.kube")
    api.wait_for("watch_calls", 1)
    api.down = True
    api.close_watches()
    wait(lambda: watcher.errors >= 3)
    assert watcher.lookup(UID_A) == ("vllm-0", "serving", {CID_A: "server"})
    lines = [r for r in caplog.records if "unreachable" in r.message]
    assert len(lines) <= 1  # rate-limited: one line per cause and interval, not per retry
    api.down = False
    api.put(make_pod("back", "serving", UID_B, NODE))
    wait(lambda: watcher.lookup(UID_B) is not None)


def test_close_returns_promptly(api: FakeKubeAPI, tmp_path: Path) -> None:
    cfg = config(mode="on", node_name=NODE, kubeconfig=str(api.kubeconfig(tmp_path / "kc")))
    w = kube.from_config(cfg, environ={})
    assert w is not None
    w.start()
    assert w.wait_listed(10)
    api.wait_for("watch_calls", 1)
    began = time.monotonic()
    w.close()
    assert time.monotonic() - began < 2.0


# --- with discovery -------------------------------------------------------------------------


def fake_proc(root: Path, pid: int, pod_uid: str, container_id: str) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "cmdline").write_bytes(b"python3\0serve.py\0")
    (d / "comm").write_text("python3\n")
    (d / "stat").write_text(f"{pid} (python3) S " + " ".join(["0"] * 18) + " 4242 0 0\n")
    slug = pod_uid.replace("-", "_")
    (d / "cgroup").write_text(
        f"0::/kubepods.slice/kubepods-pod{slug}.slice/cri-containerd-{container_id}.scope\n"
    )


def test_discovery_labels_processes_with_pod_and_container_names(
    api: FakeKubeAPI, watcher: kube.PodWatcher, tmp_path: Path
) -> None:
    fake_proc(tmp_path / "proc", 4321, UID_A, CID_A)
    d = Discovery(procfs=str(tmp_path / "proc"), patterns=["serve"], resolver=watcher, self_pid=1)
    d.refresh()
    info = d.get(4321)
    assert info is not None
    assert info.labels() == {
        "pod": "vllm-0",
        "namespace": "serving",
        "container": "server",
        "comm": "python3",
    }


def test_a_pod_known_only_after_the_process_was_first_seen_still_gets_its_name(
    api: FakeKubeAPI, watcher: kube.PodWatcher, tmp_path: Path
) -> None:
    fake_proc(tmp_path / "proc", 4321, UID_B, CID_A2)
    d = Discovery(procfs=str(tmp_path / "proc"), patterns=["serve"], resolver=watcher, self_pid=1)
    d.refresh()
    assert d.get(4321).pod == ""  # type: ignore[union-attr]
    api.put(make_pod("late", "serving", UID_B, NODE, {"main": CID_A2}))
    wait(lambda: watcher.lookup(UID_B) is not None)
    d.refresh()
    assert d.get(4321).labels()["pod"] == "late"  # type: ignore[union-attr]
