"""The shipped pieces fit together: real Prometheus evaluates the production rules on the
series the agent exports (the GPU's memory, its processes, and the workload that owns each
process's pod), real Alertmanager routes the alert with alerts/alertmanager.yml, and the
controller, configured exactly as deploy/rollback-controller.yaml ships it, rolls back the
Deployment the alert names in the Kubernetes API, and only where it was allowed to."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml
from fake_kube import FakeKube, llm_fixture
from rbproc import (
    TOKEN,
    ControllerProcess,
    MetricsPage,
    alertmanager,
    alertmanager_config,
    generate_rules,
    prometheus,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def series(name: str, value: str, **labels: str) -> str:
    text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{text}}} {value}\n"


# What `vigil run` exports on a node where GPUs 0 and 1 are full, each with one process:
# GPU 0's belongs to the Deployment inference/llm, GPU 1's to kube-system/llm (names as
# the agent's discovery and GPU collector render them).
GPUS = {
    "0": ("GPU-aaaa", "llm-3abc-x1", "inference"),
    "1": ("GPU-bbbb", "llm-3abc-y2", "kube-system"),
}
METRICS = "".join(
    [
        "# TYPE vigil_gpu_memory_used_bytes gauge\n",
        *(
            series("vigil_gpu_memory_used_bytes", "78e9", gpu=g, uuid=u)
            for g, (u, _, _) in GPUS.items()
        ),
        "# TYPE vigil_gpu_memory_total_bytes gauge\n",
        *(
            series("vigil_gpu_memory_total_bytes", "80e9", gpu=g, uuid=u)
            for g, (u, _, _) in GPUS.items()
        ),
        "# TYPE vigil_gpu_process_memory_used_bytes gauge\n",
        *(
            series(
                "vigil_gpu_process_memory_used_bytes",
                "70e9",
                gpu=g,
                uuid=u,
                pod=pod,
                namespace=ns,
                container="server",
                comm="python3",
                pid="",
            )
            for g, (u, pod, ns) in GPUS.items()
        ),
        "# TYPE vigil_watched_process_info gauge\n",
        *(
            series(
                "vigil_watched_process_info",
                "1",
                pid="",
                comm="python3",
                pod=pod,
                namespace=ns,
                container="server",
                pod_uid=f"uid-{g}",
                container_id=f"cid-{g}",
                source="gpu",
                workload_kind="Deployment",
                workload="llm",
            )
            for g, (_, pod, ns) in GPUS.items()
        ),
    ]
)


def shipped_config(tmp_path: Path, kube: FakeKube, token_file: Path) -> Path:
    """deploy/rollback-controller.yaml's configuration, with only what the pod mounts
    (the token) and the API server's address (a kubeconfig) pointed at this test."""
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "rollback-controller.yaml").read_text()))
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    cfg = yaml.safe_load(cm["data"]["rollback.yaml"])
    cfg["token_file"] = str(token_file)
    cfg["cooldown"] = "1s"
    for target in cfg["targets"].values():
        target["kubeconfig"] = str(kube.kubeconfig(tmp_path / "kubeconfig"))
    path = tmp_path / "rollback.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def shipped_stack(
    es: ExitStack, tmp_path: Path, kube: FakeKube, token_file: Path, exporter: MetricsPage
) -> ControllerProcess:
    """The shipped rules in a real Prometheus scraping ``exporter``, a real Alertmanager
    with the shipped route, and the controller with the shipped configuration against
    ``kube``; all stopped by ``es``. Returns the controller."""
    c = es.enter_context(
        ControllerProcess(
            ["--config", str(shipped_config(tmp_path, kube, token_file))], tmp_path / "state"
        )
    )
    am = es.enter_context(
        alertmanager(
            tmp_path, alertmanager_config(tmp_path / "am.yml", c.url + "/v1/alerts", token_file)
        )
    )
    es.enter_context(
        prometheus(tmp_path, generate_rules(tmp_path / "rules.yml"), exporter.target, am.url)
    )
    return c


def test_the_shipped_rules_and_policy_roll_back_only_an_allowed_opted_in_deployment(
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)  # a token others can read is refused
    exporter = MetricsPage(METRICS)
    with FakeKube() as kube, ExitStack() as es:
        llm_fixture(kube)  # inference/llm, opted in
        llm_fixture(kube, namespace="kube-system")  # opted in, but not an allowed namespace
        c = shipped_stack(es, tmp_path, kube, token_file, exporter)
        wait_for(
            "the rollback of inference/llm",
            lambda: any(r["state"] == "done" for r in c.rollbacks()),
            60,
            c.logs,
        )
        wait_for(
            "the refusal of kube-system/llm",
            lambda: c.metric("vigil_rollback_alerts_total", result="refused") >= 1,
            30,
            c.logs,
        )
        (rb,) = c.rollbacks()
        assert rb["result"] == "succeeded", rb["detail"]
        assert rb["target"] == "workload:inference/Deployment/llm"
        assert rb["plan"]["object"] == "deployment:inference/llm"
        assert rb["labels"]["alertname"] == "VigilGPUMemoryFull"
        assert rb["labels"]["workload_kind"] == "Deployment" and rb["labels"]["gpu"] == "0"
    exporter.server.shutdown()
    patched = {
        (path.split("/")[5], method) for method, path, _ in kube.requests if method == "PATCH"
    }
    assert patched == {("inference", "PATCH")}
    images = {
        ns: dep["spec"]["template"]["spec"]["containers"][0]["image"]
        for (ns, _), dep in kube.deployments.items()
    }
    assert images == {"inference": "llm:v2", "kube-system": "llm:v3"}
