"""End to end for the workloads models are served by: real Prometheus evaluates the
production rules on the series the agent exports for a full GPU whose process belongs to
an Argo Rollout, a StatefulSet or a KServe InferenceService (named as the agent names
them), real Alertmanager routes the alert with alerts/alertmanager.yml, and the
controller, configured as deploy/rollback-controller.yaml ships it, finds the owner
through the fake API server and sends exactly one patch, however often the alert is
re-sent."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
from fake_workloads import FakeWorkloads, isvc_fixture, rollout_fixture, statefulset_fixture
from rbproc import (
    TOKEN,
    MetricsPage,
    wait_for,
)
from test_rollback_shipped_policy import series, shipped_stack

from agent.rollback.actions.kube_api import RBAC

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def gpu_full(pod: str, workload_kind: str, workload: str) -> str:
    """`vigil run`'s series for GPU 0, full, with one process of ``pod`` in inference."""
    return "".join(
        [
            "# TYPE vigil_gpu_memory_used_bytes gauge\n",
            series("vigil_gpu_memory_used_bytes", "78e9", gpu="0", uuid="GPU-aaaa"),
            "# TYPE vigil_gpu_memory_total_bytes gauge\n",
            series("vigil_gpu_memory_total_bytes", "80e9", gpu="0", uuid="GPU-aaaa"),
            "# TYPE vigil_gpu_process_memory_used_bytes gauge\n",
            series(
                "vigil_gpu_process_memory_used_bytes",
                "70e9",
                gpu="0",
                uuid="GPU-aaaa",
                pod=pod,
                namespace="inference",
                container="server",
                comm="python3",
                pid="",
            ),
            "# TYPE vigil_watched_process_info gauge\n",
            series(
                "vigil_watched_process_info",
                "1",
                pid="",
                comm="python3",
                pod=pod,
                namespace="inference",
                container="server",
                pod_uid="uid-0",
                container_id="cid-0",
                source="gpu",
                workload_kind=workload_kind,
                workload=workload,
            ),
        ]
    )


CASES = {
    # The agent names an Argo Rollout's pod by its ReplicaSet; a canary is in progress.
    "rollout": (
        rollout_fixture,
        ("llm-7e9f0a1b3-x7k2p", "ReplicaSet", "llm-7e9f0a1b3"),
        "/apis/argoproj.io/v1alpha1/namespaces/inference/rollouts/llm/status",
        "rollout:inference/llm",
    ),
    "statefulset": (
        statefulset_fixture,
        ("shard-0", "StatefulSet", "shard"),
        "/apis/apps/v1/namespaces/inference/statefulsets/shard",
        "statefulset:inference/shard",
    ),
    # A KServe predictor's pod is named by the Deployment Knative made for it.
    "inferenceservice": (
        isvc_fixture,
        (
            "sklearn-iris-predictor-00002-deployment-5bd9ff46f8-shtzd",
            "Deployment",
            "sklearn-iris-predictor-00002-deployment",
        ),
        "/apis/serving.kserve.io/v1beta1/namespaces/inference/inferenceservices/sklearn-iris",
        "inferenceservice:inference/sklearn-iris",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_alert_on_a_served_model_patches_its_owner_exactly_once(
    tmp_path: Path, case: str
) -> None:
    fixture, (pod, workload_kind, workload), patched_path, owner = CASES[case]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)  # a token others can read is refused
    exporter = MetricsPage(gpu_full(pod, workload_kind, workload))
    with FakeWorkloads() as kube, ExitStack() as es:
        fixture(kube)  # type: ignore[operator]
        c = shipped_stack(es, tmp_path, kube, token_file, exporter)
        wait_for(
            f"the rollback of {owner}",
            lambda: any(r["state"] == "done" for r in c.rollbacks()),
            60,
            c.logs,
        )
        # Alertmanager keeps re-sending the firing alert: each is a duplicate, not a patch.
        wait_for(
            "a re-sent alert",
            lambda: c.metric("vigil_rollback_alerts_total", result="duplicate") >= 1,
            30,
            c.logs,
        )
        (rb,) = c.rollbacks()
        assert rb["result"] == "succeeded", rb["detail"]
        assert rb["plan"]["object"] == owner
        assert rb["labels"]["alertname"] == "VigilGPUMemoryFull"
    exporter.server.shutdown()
    sent = [(p, ct) for m, p, _b, ct in kube.typed if m == "PATCH"]
    assert [p for p, _ in sent] == [patched_path]
    assert kube.used <= RBAC
