"""Targets from Kubernetes: pod IPs and the vigil.dev/inference-* annotations, read by the
real pod watcher through the official client from a local API server; plus the settings'
checks and `vigil doctor`'s view of the servers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentproc import free_port, stop_process, wait_http_ready
from deploy.fakekube import FakeKubeAPI, make_pod
from test_collector_http import Server, fixture, reply, scrape, value

from agent import kube
from agent.collectors import SPECS
from agent.collectors.inference.collector import InferenceCollector
from agent.collectors.inference.doctor import doctor
from agent.collectors.inference.settings import InferenceSettings
from agent.config import ConfigError, resolve
from agent.discovery import Discovery
from agent.options import SettingError
from agent.registry import Paths

NODE = "gpu-node-1"
UID = "0f6a1a52-2c1e-4b7a-9a53-8e3c2f1d4b01"
UID_BAD = "5d2c3e4f-1111-4a2b-8c3d-4e5f6a7b8c9d"


def annotated(name: str, uid: str, ip: str, annotations: dict[str, str]) -> dict[str, object]:
    pod = make_pod(name, "serving", uid, NODE, {"server": "a" * 64})
    pod["metadata"]["annotations"] = annotations  # type: ignore[index]
    pod["status"]["podIP"] = ip  # type: ignore[index]
    return pod


@pytest.fixture
def watcher(tmp_path: Path) -> Iterator[tuple[FakeKubeAPI, kube.PodWatcher]]:
    with FakeKubeAPI() as api:
        cfg = resolve(
            SPECS,
            flag_values={
                "kubernetes.mode": "on",
                "kubernetes.node-name": NODE,
                "kubernetes.kubeconfig": str(api.kubeconfig(tmp_path / "kc")),
            },
        )
        w = kube.from_config(cfg, environ={})
        assert w is not None
        yield api, w
        w.close()


def test_pod_entry_keeps_ip_and_annotations() -> None:
    e = kube.pod_entry(annotated("p", UID, "10.1.2.3", {"vigil.dev/inference-port": "8000"}))
    assert e is not None and e.ip == "10.1.2.3"
    assert e.annotations == {"vigil.dev/inference-port": "8000"}
    bare = kube.pod_entry(make_pod("q", "ns", UID_BAD, NODE))
    assert bare is not None and (bare.ip, dict(bare.annotations)) == ("", {})


def test_an_annotated_pod_is_probed_at_its_pod_ip(
    watcher: tuple[FakeKubeAPI, kube.PodWatcher], caplog: pytest.LogCaptureFixture
) -> None:
    api, w = watcher
    srv = Server({"/v2/health/ready": reply(200, ""), "/stats": reply(200, fixture("triton"))})
    try:
        prefix = "vigil.dev/inference"
        api.put(
            annotated(
                "triton-0",
                UID,
                "127.0.0.1",  # the stand-in listens on loopback: its "pod IP"
                {
                    f"{prefix}-port": str(srv.port),
                    f"{prefix}-path": "/stats",
                    f"{prefix}-kind": "triton",
                },
            )
        )
        api.put(annotated("broken-0", UID_BAD, "127.0.0.2", {f"{prefix}-port": "http"}))
        w.start()
        assert w.wait_listed(10)
        c = InferenceCollector(
            Discovery(procfs="/proc", patterns=[], resolver=w), InferenceSettings(), "/proc"
        )
        c.open()
        fams = scrape(c)
        t = {"pod": "triton-0", "namespace": "serving", "port": str(srv.port), "kind": "triton"}
        assert value(fams, "vigil_inference_up", **t) == 1
        assert (
            value(fams, "vigil_inference_requests_total", **t, model="resnet50", outcome="success")
            == 1000
        )
        assert value(fams, "vigil_inference_targets", source="annotation") == 1
        assert srv.hits.get("/stats") == 1 and "/metrics" not in srv.hits
        assert any(getattr(r, "pod", "") == "broken-0" for r in caplog.records)
    finally:
        srv.close()


def test_settings_refuse_what_cannot_work() -> None:
    with pytest.raises(SettingError, match="timeout"):
        InferenceSettings(interval=1.0, timeout=1.0)
    with pytest.raises(SettingError, match="only http"):
        InferenceSettings(targets=("https://x:1 kind=vllm",))
    with pytest.raises(ConfigError, match=r"collector\.inference\.targets"):
        resolve(SPECS, yaml_values={"collector.inference.targets": ["http://h kind=nope"]})
    ok = resolve(SPECS, yaml_values={"collector.inference.targets": ["http://h:1 kind=tgi"]})
    assert ok.values["collector.inference.targets"] == ["http://h:1 kind=tgi"]


@pytest.fixture
def vllm_process() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    from test_collector_agent import FIXTURE, SERVER

    port = free_port()
    # "vllm serve" in the command line: the doctor looks for servers by their command line.
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(FIXTURE), str(port), "vllm", "serve"]
    )
    wait_http_ready(f"http://127.0.0.1:{port}/health", proc, "stand-in server", lambda: "")
    yield proc, port
    stop_process(proc)


def test_doctor_finds_servers_and_says_which_answer(
    vllm_process: tuple[subprocess.Popen[bytes], int], tmp_path: Path
) -> None:
    proc, port = vllm_process
    dead = free_port()
    paths = Paths(procfs="/proc", state_dir=tmp_path, token_file=tmp_path / "t")
    checks = doctor(InferenceSettings(targets=(f"http://127.0.0.1:{dead} kind=oip",)), paths)
    mine = [c for c in checks if c.what == f"vllm server pid {proc.pid}"]
    assert len(mine) == 1 and mine[0].ok and f"port {port} /health answered 200" in mine[0].detail
    target = [c for c in checks if c.what.startswith("target ")]
    assert len(target) == 1 and not target[0].ok and "refused" in target[0].detail
