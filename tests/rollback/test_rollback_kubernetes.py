"""Kubernetes Deployment action through the official client against a local fake API server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_kube import REVISION, FakeKube, llm_fixture

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
    llm_fixture(kube)
    a = action(kube, tmp_path)
    plan = a.plan()
    assert plan == {"from_revision": 3, "to_revision": 2, "replicaset": "llm-2abc"}
    out = a.apply(plan, dry_run=False)
    assert out.result == SUCCEEDED, out.detail
    (patch,) = kube.patches()
    ops = {op["path"]: op for op in patch}
    assert set(ops) == {"/spec/template", "/metadata/annotations"}
    assert all(op["op"] == "replace" for op in patch)
    template = ops["/spec/template"]["value"]
    assert template["metadata"]["labels"] == {"app": "llm"}, "pod-template-hash removed"
    assert template["spec"]["containers"][0]["image"] == "llm:v2"
    assert template["spec"]["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    # the revision's own annotations, and the Deployment's bookkeeping ones kept
    assert ops["/metadata/annotations"]["value"] == {
        "team": "owner-of-v2",
        REVISION: "3",
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
    }
    assert image(kube) == "llm:v2"
    assert kube.deployments[("inference", "llm")]["metadata"]["annotations"][REVISION] == "4"
    listed = [p for m, p, _ in kube.requests if "replicasets" in p]
    assert listed and all("labelSelector=app%3Dllm" in p for p in listed)


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
