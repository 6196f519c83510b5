"""Kubernetes Deployment action through the official client against a local fake API server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_kube import REVISION, FakeKube, deployment_config, llm_fixture, template

from agent.rollback.actions.base import DRY_RUN, SKIPPED, SUCCEEDED, ActionError
from agent.rollback.actions.kubernetes import KubernetesDeploymentAction, label_selector


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube() as k:
        yield k


def action(kube: FakeKube, tmp_path: Path, **over: object) -> KubernetesDeploymentAction:
    params = {
        "namespace": "inference",
        "deployment": "llm",
        "kubeconfig": str(kube.kubeconfig(tmp_path / "kubeconfig")),
        **over,
    }
    return KubernetesDeploymentAction(params, ["inference"])


def image(kube: FakeKube) -> str:
    dep = kube.deployments[("inference", "llm")]
    return str(dep["spec"]["template"]["spec"]["containers"][0]["image"])


def test_undo_patches_the_previous_revision_like_kubectl(kube: FakeKube, tmp_path: Path) -> None:
    """kubernetes/kubectl pkg/polymorphichelpers/rollback.go: DeploymentRollbacker takes the
    ReplicaSet of the highest revision below the Deployment's, and getDeploymentPatch sends
    types.JSONPatchType [replace /spec/template (without pod-template-hash), replace
    /metadata/annotations (the revision's, with annotationsToSkip kept from the
    Deployment)]. Ours is that body behind one leading op: the resourceVersion read."""
    llm_fixture(kube)
    read_rv = kube.deployments[("inference", "llm")]["metadata"]["resourceVersion"]
    a = action(kube, tmp_path)
    plan = a.plan()
    assert plan == {"from_revision": 3, "to_revision": 2, "replicaset": "llm-2abc"}
    out = a.apply(plan, dry_run=False)
    assert out.result == SUCCEEDED, out.detail
    (patch,) = kube.patches()
    precondition, *kubectl_body = patch
    assert precondition == {
        "op": "replace",
        "path": "/metadata/resourceVersion",
        "value": read_rv,
    }
    assert kubectl_body == [
        {"op": "replace", "path": "/spec/template", "value": template("llm:v2")},
        {
            "op": "replace",
            "path": "/metadata/annotations",
            # the revision's own annotations, and the Deployment's bookkeeping ones kept
            "value": {
                "team": "owner-of-v2",
                REVISION: "3",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
            },
        },
    ]
    value = kubectl_body[0]["value"]
    assert value["metadata"]["labels"] == {"app": "llm"}, "pod-template-hash removed"
    assert value["spec"]["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert image(kube) == "llm:v2"
    assert kube.deployments[("inference", "llm")]["metadata"]["annotations"][REVISION] == "4"
    listed = [p for m, p, _ in kube.requests if "replicasets" in p]
    assert listed and all("labelSelector=app%3Dllm" in p for p in listed)


def reads(kube: FakeKube) -> tuple[int, int]:
    """(GETs of the Deployment, LISTs of ReplicaSets) the fake has answered."""
    gets = sum(m == "GET" and "/deployments/" in p for m, p, _ in kube.requests)
    lists = sum(
        m == "GET" and p.split("?")[0].endswith("/replicasets") for m, p, _ in kube.requests
    )
    return gets, lists


def test_a_conflict_is_read_again_and_patched_once_more(kube: FakeKube, tmp_path: Path) -> None:
    llm_fixture(kube)
    a = action(kube, tmp_path)
    plan = a.plan()
    before = reads(kube)
    kube.conflicts = 1  # someone scales the Deployment between our read and our patch
    kube.meddle = lambda dep: dep["spec"].update(replicas=5)
    out = a.apply(plan, dry_run=False)
    assert out.result == SUCCEEDED, out.detail
    first, second = kube.patches()
    assert len(kube.applied) == 1 and kube.applied[0] == second
    assert first[0]["path"] == second[0]["path"] == "/metadata/resourceVersion"
    assert second[0]["value"] != first[0]["value"], "the second patch carries the new read"
    assert first[1:] == second[1:]
    after = reads(kube)
    assert (after[0] - before[0], after[1] - before[1]) == (2, 2), "both reads redone"
    dep = kube.deployments[("inference", "llm")]
    assert image(kube) == "llm:v2" and dep["spec"]["replicas"] == 5
    assert dep["metadata"]["annotations"][REVISION] == "4"


def test_a_rollout_made_between_read_and_patch_is_not_undone(
    kube: FakeKube, tmp_path: Path
) -> None:
    """Someone rolls out v4 after the decision and before the patch: the patch computed from
    the old read is refused (409), and the new read finds the rollback moot."""
    llm_fixture(kube)
    a = action(kube, tmp_path)
    plan = a.plan()

    def rollout_v4(dep: dict[str, Any]) -> None:
        dep["spec"]["template"] = template("llm:v4")
        dep["metadata"]["annotations"][REVISION] = "4"

    kube.conflicts, kube.meddle = 1, rollout_v4
    out = a.apply(plan, dry_run=False)
    assert out.result == SKIPPED and "moved to revision 4" in out.detail, out.detail
    assert len(kube.patches()) == 1 and kube.applied == []
    assert image(kube) == "llm:v4"


def test_a_second_conflict_fails_with_the_reason_and_patches_nothing(
    kube: FakeKube, tmp_path: Path
) -> None:
    llm_fixture(kube)
    a = action(kube, tmp_path)
    plan = a.plan()
    kube.conflicts = 2
    with pytest.raises(
        ActionError,
        match=r"deployment inference/llm changed between read and patch twice "
        r"\(HTTP 409 Conflict both times\).*nothing was patched",
    ):
        a.apply(plan, dry_run=False)
    assert len(kube.patches()) == 2 and kube.applied == []
    assert image(kube) == "llm:v3"
    assert kube.deployments[("inference", "llm")]["metadata"]["annotations"][REVISION] == "3"


def test_a_second_conflict_is_journaled_as_failed(tmp_path: Path) -> None:
    """A real controller process: the reason reaches the journal and the metric."""

    from rbproc import ControllerProcess, alert, payload

    with FakeKube() as kube:
        llm_fixture(kube)
        cfg = deployment_config(tmp_path, kube)
        kube.conflicts = 2
        with ControllerProcess(["--config", str(cfg)], tmp_path / "s") as c:
            c.post(
                payload(
                    alert({"action": "rollback", "namespace": "inference", "deployment": "llm"})
                )
            )
            (rb,) = c.wait_done()
            assert rb["result"] == "failed", rb["detail"]
            assert "changed between read and patch twice (HTTP 409 Conflict" in rb["detail"]
            assert c.metric("vigil_rollbacks_total", result="failed") == 1
        assert len(kube.patches()) == 2 and kube.applied == []
        assert image(kube) == "llm:v3"


def test_a_paused_deployment_is_refused(kube: FakeKube, tmp_path: Path) -> None:
    llm_fixture(kube, paused=True)
    with pytest.raises(ActionError, match="paused; resume it"):
        action(kube, tmp_path).plan()
    assert kube.patches() == []


def test_already_equal_is_skipped(kube: FakeKube, tmp_path: Path) -> None:
    llm_fixture(kube, current_image="llm:v2")  # revision 3 runs revision 2's template
    a = action(kube, tmp_path)
    out = a.apply(a.plan(), dry_run=False)
    assert out.result == SKIPPED and "already matches revision 2" in out.detail
    assert kube.patches() == []


def test_after_a_restart_the_patch_is_not_sent_twice(kube: FakeKube, tmp_path: Path) -> None:
    llm_fixture(kube)
    a = action(kube, tmp_path)
    plan = a.plan()
    a.apply(plan, dry_run=False)
    again = action(kube, tmp_path).apply(plan, dry_run=False)
    assert again.result == SUCCEEDED and "before a restart" in again.detail
    assert len(kube.patches()) == 1


def test_a_deployment_changed_since_the_decision_is_left_alone(
    kube: FakeKube, tmp_path: Path
) -> None:
    llm_fixture(kube)
    a = action(kube, tmp_path)
    plan = a.plan()
    dep = kube.deployments[("inference", "llm")]
    dep["metadata"]["annotations"][REVISION] = "7"
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = "llm:v7"
    out = a.apply(plan, dry_run=False)
    assert out.result == SKIPPED and "revision 7" in out.detail and kube.patches() == []


def test_dry_run_reads_but_never_patches(kube: FakeKube, tmp_path: Path) -> None:
    llm_fixture(kube)
    a = action(kube, tmp_path)
    assert a.apply(a.plan(), dry_run=True).result == DRY_RUN
    assert kube.patches() == [] and image(kube) == "llm:v3"


def test_no_earlier_revision(kube: FakeKube, tmp_path: Path) -> None:
    llm_fixture(kube, current=1)
    with pytest.raises(ActionError, match="no earlier revision"):
        action(kube, tmp_path).plan()


def test_api_errors_are_messages(kube: FakeKube, tmp_path: Path) -> None:
    llm_fixture(kube)
    with pytest.raises(ActionError, match=r'HTTP 404: deployments.apps "nope" not found'):
        action(kube, tmp_path, deployment="nope").plan()
    stale = action(kube, tmp_path)  # its kubeconfig holds the old token
    kube.token = "rotated"
    with pytest.raises(ActionError, match="HTTP 401"):
        stale.plan()


def test_an_unreachable_api_server_is_a_message(tmp_path: Path) -> None:
    with FakeKube() as dead:
        cfg = dead.kubeconfig(tmp_path / "kubeconfig")
    a = KubernetesDeploymentAction(
        {"namespace": "n", "deployment": "d", "kubeconfig": str(cfg)}, ["n"]
    )
    with pytest.raises(ActionError, match="deployment n/d"):
        a.plan()


def test_label_selector_forms() -> None:
    assert label_selector({"matchLabels": {"b": "2", "a": "1"}}) == "a=1,b=2"
    assert (
        label_selector(
            {
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["a", "b"]},
                    {"key": "x", "operator": "NotIn", "values": ["c"]},
                    {"key": "y", "operator": "Exists"},
                    {"key": "z", "operator": "DoesNotExist"},
                ]
            }
        )
        == "tier in (a,b),x notin (c),y,!z"
    )


def test_a_deployment_reached_from_a_pod_gets_the_same_guarantee(tmp_path: Path) -> None:
    """kubernetes_workload resolves the pod to its Deployment and patches it through this
    action: a conflict once is retried, and every request stays within the Role."""
    from fake_workloads import FakeWorkloads, deployment_pod

    from agent.rollback.actions.kube_api import RBAC
    from agent.rollback.actions.kubernetes import default_client_factory
    from agent.rollback.actions.workload import WorkloadAction
    from agent.rollback.journal import Journal

    journal = Journal(tmp_path / "journal.db")
    with FakeWorkloads() as kube:
        llm_fixture(kube)
        deployment_pod(kube)
        a = WorkloadAction(
            {
                "namespace": "inference",
                "pod": "llm-3abc-q8w9e",
                "kubeconfig": str(kube.kubeconfig(tmp_path / "kubeconfig")),
            },
            {"allowed_namespaces": ["inference"]},
            journal,
            default_client_factory,
            rollback_id=1,
        )
        plan = a.plan()
        assert plan["object"] == "deployment:inference/llm"
        kube.conflicts = 1
        out = a.apply(plan, dry_run=False)
        assert out.result == SUCCEEDED, out.detail
        assert len(kube.patches()) == 2 and len(kube.applied) == 1
        assert image(kube) == "llm:v2"
    journal.close()
    assert kube.used <= RBAC, f"requests outside the Role: {kube.used - RBAC}"
