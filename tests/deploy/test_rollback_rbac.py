"""What the rollback controller can touch in a cluster, as `kubectl kustomize` renders it:
nothing on Deployments anywhere by default, get/patch in a namespace only where
deploy/rollback-namespace/ is applied, and a configuration that agrees with both."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_kustomize_render import kustomize_command

from agent.rollback.actions.kube_api import RBAC

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
NAMESPACE_GRANT = DEPLOY / "rollback-namespace"
SA = {"kind": "ServiceAccount", "name": "vigil-rollback-controller", "namespace": "vigil"}
WRITE = {"patch", "update", "create", "delete", "deletecollection", "*"}


def render(path: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [*kustomize_command(), str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def main() -> list[dict[str, Any]]:
    return render(DEPLOY)


@pytest.fixture(scope="module")
def grant() -> list[dict[str, Any]]:
    return render(NAMESPACE_GRANT)


def grants_write_on_deployments(role: dict[str, Any]) -> bool:
    for rule in role.get("rules") or []:
        groups = set(rule.get("apiGroups") or [""])
        resources = set(rule.get("resources") or [])
        if (
            groups & {"apps", "*"}
            and resources & {"deployments", "*"}
            and set(rule.get("verbs") or []) & WRITE
        ):
            return True
    return False


def test_no_cluster_role_may_patch_deployments(
    main: list[dict[str, Any]], grant: list[dict[str, Any]]
) -> None:
    for doc in [*main, *grant]:
        if doc["kind"] == "ClusterRole":
            assert not grants_write_on_deployments(doc), doc["metadata"]["name"]
    # Nor is the controller bound to any ClusterRole at all.
    for doc in [*main, *grant]:
        if doc["kind"] == "ClusterRoleBinding":
            assert SA not in doc["subjects"], doc["metadata"]["name"]


def test_deploy_alone_grants_the_controller_nothing_on_workloads(
    main: list[dict[str, Any]],
) -> None:
    bound = {
        d["roleRef"]["name"]
        for d in main
        if d["kind"] in ("RoleBinding", "ClusterRoleBinding") and SA in d["subjects"]
    }
    assert bound == {"vigil-rollback-controller-lease"}
    for d in main:
        if d["kind"] in ("Role", "ClusterRole") and d["metadata"]["name"] in bound:
            assert not grants_write_on_deployments(d)


def test_the_namespace_grant_is_exactly_the_calls_the_actions_make_in_one_namespace(
    grant: list[dict[str, Any]],
) -> None:
    assert sorted(d["kind"] for d in grant) == ["Role", "RoleBinding"]
    role = next(d for d in grant if d["kind"] == "Role")
    binding = next(d for d in grant if d["kind"] == "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "inference"
    rules = {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    # Exactly the calls the actions make: the table every fake API server request of the
    # workload tests is checked against, and whose every entry one of them is shown to use
    # (tests/rollback/test_rollback_workloads.py).
    assert rules == set(RBAC)
    # Revisions and owners are read, never written; nothing is created or deleted.
    assert {v for g, r, v in rules if r in ("replicasets", "controllerrevisions", "pods")} <= {
        "get",
        "list",
    }
    assert {v for _g, _r, v in rules} <= {"get", "list", "patch"}
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [SA]


def test_an_overlay_grants_another_namespace_as_documented(tmp_path: Path) -> None:
    # The two lines docs/rollback.md gives, in an overlay beside the tree.
    (tmp_path / "vigil").symlink_to(ROOT)
    overlay = tmp_path / "rollback-payments"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "namespace: payments\nresources: [../vigil/deploy/rollback-namespace]\n"
    )
    docs = render(overlay)
    assert {d["metadata"]["namespace"] for d in docs} == {"payments"}
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert binding["subjects"] == [SA], "the subject stays the controller in vigil"
    text = (ROOT / "docs" / "rollback.md").read_text()
    assert "namespace: payments" in text and "deploy/rollback-namespace" in text


def test_the_shipped_config_allows_exactly_the_granted_namespace(
    main: list[dict[str, Any]], grant: list[dict[str, Any]], tmp_path: Path
) -> None:
    from agent.rollback.config import load
    from agent.rollback.policy import Resolved, resolve

    cm = next(
        d
        for d in main
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "vigil-rollback-controller"
    )
    doc = yaml.safe_load(cm["data"]["rollback.yaml"])
    doc["token_file"] = str(tmp_path / "token")
    (tmp_path / "token").write_text("t\n")
    (tmp_path / "token").chmod(0o600)  # a token others can read is refused
    path = tmp_path / "rollback.yaml"
    path.write_text(yaml.safe_dump(doc))
    cfg = load(file=str(path), env={})
    granted = {d["metadata"]["namespace"] for d in grant if d["kind"] == "Role"}
    allowed = {
        ns
        for t in cfg.targets.values()
        if t.action in ("kubernetes", "kubernetes_workload")
        for ns in t.params["allowed_namespaces"]
    }
    assert allowed == granted
    # The labels the shipped rules give a rollback alert reach the workload they name...
    labels = {
        "action": "rollback",
        "alertname": "VigilGPUMemoryFull",
        "namespace": "inference",
        "workload_kind": "Deployment",
        "workload": "llm",
        "gpu": "0",
        "uuid": "GPU-a",
    }
    got = resolve(labels, cfg.rules, cfg.targets)
    assert isinstance(got, Resolved) and got.target == "workload:inference/Deployment/llm"
    # ...and nothing outside the allow-list, nor an alert that names no workload.
    for other in ({"namespace": "kube-system"}, {"workload_kind": ""}, {"workload": "../x"}):
        got = resolve({**labels, **other}, cfg.rules, cfg.targets)
        assert not isinstance(got, Resolved), other
