"""Rolling back what owns the alert's pod — Deployment, Argo Rollout, StatefulSet, KServe
InferenceService — through the official client against the fake API server.

Every test's fake records the (group, resource, verb) of each request it served; the
fixture checks at the end that all of them are in the RBAC table the Role is built from.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_kube import llm_fixture
from fake_workloads import (
    FakeWorkloads,
    deployment_pod,
    isvc_fixture,
    isvc_spec,
    owner_ref,
    pod,
    rollout_fixture,
    statefulset_fixture,
)

from agent.rollback.actions.base import DRY_RUN, SKIPPED, SUCCEEDED, ActionError, Refused
from agent.rollback.actions.kube_api import RBAC
from agent.rollback.actions.kubernetes import default_client_factory
from agent.rollback.actions.workload import WorkloadAction
from agent.rollback.journal import Journal

ROLLOUT_POD = "llm-7e9f0a1b3-x7k2p"
ISVC_POD = "sklearn-iris-predictor-00002-deployment-5bd9ff46f8-shtzd"


@pytest.fixture
def kube() -> Iterator[FakeWorkloads]:
    with FakeWorkloads() as k:
        yield k
    assert k.used <= RBAC, f"requests outside the Role: {k.used - RBAC}"


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.db")
    yield j
    j.close()


def action(
    kube: FakeWorkloads,
    journal: Journal,
    tmp_path: Path,
    pod_name: str,
    *,
    rollback_id: int = 1,
    **authority: Any,
) -> WorkloadAction:
    params = {
        "namespace": "inference",
        "pod": pod_name,
        "kubeconfig": str(kube.kubeconfig(tmp_path / "kubeconfig")),
    }
    return WorkloadAction(
        params,
        {"allowed_namespaces": ["inference"], **authority},
        journal,
        default_client_factory,
        rollback_id=rollback_id,
        cooldown=600,
    )


def patches(kube: FakeWorkloads, resource: str) -> list[tuple[str, Any, str]]:
    return [(p, b, ct) for m, p, b, ct in kube.typed if m == "PATCH" and f"/{resource}/" in p]


def image_of(obj: dict[str, Any]) -> str:
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


# --- owner resolution ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "pod_name", "kind", "name", "via"),
    [
        (
            "deployment",
            "llm-3abc-q8w9e",
            "Deployment",
            "llm",
            ["Pod/llm-3abc-q8w9e", "ReplicaSet/llm-3abc"],
        ),
        (
            "rollout",
            ROLLOUT_POD,
            "Rollout",
            "llm",
            [f"Pod/{ROLLOUT_POD}", "ReplicaSet/llm-7e9f0a1b3"],
        ),
        ("statefulset", "shard-0", "StatefulSet", "shard", ["Pod/shard-0"]),
        ("isvc", ISVC_POD, "InferenceService", "sklearn-iris", [f"Pod/{ISVC_POD}"]),
    ],
)
def test_a_pod_resolves_to_the_object_that_owns_the_model(
    kube: FakeWorkloads,
    journal: Journal,
    tmp_path: Path,
    setup: str,
    pod_name: str,
    kind: str,
    name: str,
    via: list[str],
) -> None:
    if setup == "deployment":
        llm_fixture(kube)
        deployment_pod(kube)
    elif setup == "rollout":
        rollout_fixture(kube)
    elif setup == "statefulset":
        statefulset_fixture(kube)
    else:
        isvc_fixture(kube)
    plan = action(kube, journal, tmp_path, pod_name).plan()
    assert (plan["kind"], plan["name"], plan["via"]) == (kind, name, via)
    assert plan["object"] == f"{kind.lower()}:inference/{name}"
    if setup == "isvc":
        # The KServe label decides: the Knative chain above the pod is never walked.
        assert not [p for _m, p, _b, _c in kube.typed if "/replicasets/" in p]


@pytest.mark.parametrize(
    ("setup", "workload_kind", "workload", "kind", "name"),
    [
        ("deployment", "Deployment", "llm", "Deployment", "llm"),
        # The agent names an Argo Rollout's pods by their ReplicaSet (no pod-template-hash).
        ("rollout", "ReplicaSet", "llm-7e9f0a1b3", "Rollout", "llm"),
        ("statefulset", "StatefulSet", "shard", "StatefulSet", "shard"),
        # ...and a KServe predictor's by the Deployment Knative made for it.
        (
            "isvc",
            "Deployment",
            "sklearn-iris-predictor-00002-deployment",
            "InferenceService",
            "sklearn-iris",
        ),
    ],
)
def test_the_workload_the_shipped_rules_name_resolves_to_its_owner(
    kube: FakeWorkloads,
    journal: Journal,
    tmp_path: Path,
    setup: str,
    workload_kind: str,
    workload: str,
    kind: str,
    name: str,
) -> None:
    {
        "deployment": llm_fixture,
        "rollout": rollout_fixture,
        "statefulset": statefulset_fixture,
        "isvc": isvc_fixture,
    }[setup](kube)  # type: ignore[operator]
    a = WorkloadAction(
        {
            "namespace": "inference",
            "workload_kind": workload_kind,
            "workload": workload,
            "kubeconfig": str(kube.kubeconfig(tmp_path / "kubeconfig")),
        },
        {"allowed_namespaces": ["inference"]},
        journal,
        default_client_factory,
    )
    plan = a.plan()
    assert (plan["kind"], plan["name"]) == (kind, name)
    assert a.apply(plan, dry_run=False).result in (SUCCEEDED, SKIPPED)
    assert not [p for m, p, _b, _c in kube.typed if m == "PATCH" and "/deployments/sklearn" in p]


def test_a_pod_of_another_kind_is_refused_with_what_owns_it(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path
) -> None:
    ds = {"kind": "DaemonSet", "metadata": {"name": "node-agent", "uid": "ds-uid"}}
    pod(kube, "node-agent-abc", owner=owner_ref(ds, "apps/v1"))
    pod(kube, "bare")
    with pytest.raises(Refused, match=r"controlled by DaemonSet/node-agent \(apps/v1\)"):
        action(kube, journal, tmp_path, "node-agent-abc").plan()
    with pytest.raises(Refused, match="Pod/bare has no controller"):
        action(kube, journal, tmp_path, "bare").plan()
    with pytest.raises(
        ActionError, match=r'get pod inference/gone: HTTP 404: pods "gone" not found'
    ):
        action(kube, journal, tmp_path, "gone").plan()
    assert kube.patches() == []


def test_a_kind_the_target_does_not_list_is_refused(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path
) -> None:
    statefulset_fixture(kube)
    a = action(kube, journal, tmp_path, "shard-0", kinds=["Deployment", "Rollout"])
    with pytest.raises(
        Refused, match=r"belongs to StatefulSet shard.*kinds are Deployment, Rollout"
    ):
        a.plan()


@pytest.mark.parametrize("setup", ["rollout", "statefulset", "isvc"])
def test_the_owning_object_must_opt_in(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path, setup: str
) -> None:
    fixture, pod_name, kind = {
        "rollout": (rollout_fixture, ROLLOUT_POD, "Rollout"),
        "statefulset": (statefulset_fixture, "shard-0", "StatefulSet"),
        "isvc": (isvc_fixture, ISVC_POD, "InferenceService"),
    }[setup]
    fixture(kube, opted_in=False)  # type: ignore[operator]
    with pytest.raises(Refused, match=f"{kind} inference/.* has not opted in.*vigil.dev/rollback"):
        action(kube, journal, tmp_path, pod_name).plan()
    assert kube.patches() == []


def test_a_namespace_outside_the_allow_list_is_refused_before_any_request(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path
) -> None:
    rollout_fixture(kube, namespace="payments")
    a = action(kube, journal, tmp_path, ROLLOUT_POD)
    a.namespace = "payments"
    with pytest.raises(Refused, match="'payments' is not in allowed_namespaces"):
        a.plan()
    assert kube.typed == []


# --- Argo Rollouts -------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["canary", "blueGreen"])
def test_an_update_in_progress_is_aborted_as_the_plugin_does(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path, strategy: str
) -> None:
    """argoproj/argo-rollouts pkg/kubectl-argo-rollouts/cmd/abort/abort.go: AbortRollout
    sends abortPatch `{"status":{"abort":true}}` as types.MergePatchType to the "status"
    subresource."""
    rollout_fixture(kube, "canary", strategy=strategy)
    read_rv = kube.get("rollouts", "inference", "llm")["metadata"]["resourceVersion"]
    a = action(kube, journal, tmp_path, ROLLOUT_POD)
    plan = a.plan()
    assert plan["operation"] == "abort" and plan["stable"] == "6c8d9e0a2"
    out = a.apply(plan, dry_run=False)
    assert out.result == SUCCEEDED and "stable ReplicaSet 6c8d9e0a2" in out.detail
    ((path, body, ctype),) = patches(kube, "rollouts")
    assert path == "/apis/argoproj.io/v1alpha1/namespaces/inference/rollouts/llm/status"
    assert ctype == "application/merge-patch+json"
    precondition = body.pop("metadata")
    assert body == {"status": {"abort": True}}
    assert precondition == {"resourceVersion": read_rv}
    ro = kube.get("rollouts", "inference", "llm")
    assert ro["status"]["abort"] is True and image_of(ro) == "llm:v3", "spec untouched"


def test_a_promoted_rollout_is_undone_as_the_plugin_does(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path
) -> None:
    """argoproj/argo-rollouts pkg/kubectl-argo-rollouts/cmd/undo/undo.go: RunUndoRollout
    takes the ReplicaSet of the second-highest rollout.argoproj.io/revision among those the
    Rollout controls, deletes rollouts-pod-template-hash from its template and sends
    getRolloutPatch: types.JSONPatchType, one replace of /spec/template."""
    rollout_fixture(kube, "promoted")
    read_rv = kube.get("rollouts", "inference", "llm")["metadata"]["resourceVersion"]
    a = action(kube, journal, tmp_path, ROLLOUT_POD)
    plan = a.plan()
    assert (plan["operation"], plan["from_revision"], plan["to_revision"]) == ("undo", 3, 2)
    assert a.apply(plan, dry_run=False).result == SUCCEEDED
    ((path, body, ctype),) = patches(kube, "rollouts")
    assert path.endswith("/rollouts/llm") and ctype == "application/json-patch+json"
    assert body[0] == {"op": "replace", "path": "/metadata/resourceVersion", "value": read_rv}
    expected = {
        "metadata": {"labels": {"app": "llm"}},
        "spec": {
            "containers": [
                {
                    "name": "server",
                    "image": "llm:v2",
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ]
        },
    }
    assert body[1:] == [{"op": "replace", "path": "/spec/template", "value": expected}]
    assert image_of(kube.get("rollouts", "inference", "llm")) == "llm:v2"
    # A restart between the patch and its outcome finds the work done: no second patch.
    again = action(kube, journal, tmp_path, ROLLOUT_POD).apply(plan, dry_run=False)
    assert again.result == SUCCEEDED and "before a restart" in again.detail
    assert len(patches(kube, "rollouts")) == 1


def test_a_rollout_argo_is_already_aborting_is_skipped(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path
) -> None:
    rollout_fixture(kube, "aborting")
    a = action(kube, journal, tmp_path, ROLLOUT_POD)
    out = a.apply(a.plan(), dry_run=False)
    assert out.result == SKIPPED and 'Metric "success-rate" assessed Failed' in out.detail
    assert kube.patches() == []


def test_a_rollout_without_an_earlier_revision_fails_with_the_reason(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path
) -> None:
    rollout_fixture(kube, "first")
    with pytest.raises(ActionError, match="rollout inference/llm: no earlier revision"):
        action(kube, journal, tmp_path, "llm-5d7b8c9f1-x7k2p").plan()


def test_a_conflict_is_retried_once_then_fails_with_the_reason(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path
) -> None:
    rollout_fixture(kube, "canary")
    a = action(kube, journal, tmp_path, ROLLOUT_POD)
    plan = a.plan()
    kube.conflicts = 2
    with pytest.raises(ActionError, match=r"changed between read and patch twice.*409"):
        a.apply(plan, dry_run=False)
    assert len(patches(kube, "rollouts")) == 2
    assert not kube.get("rollouts", "inference", "llm")["status"].get("abort")
    kube.conflicts = 1
    assert a.apply(plan, dry_run=False).result == SUCCEEDED
    assert len(patches(kube, "rollouts")) == 4
    assert kube.get("rollouts", "inference", "llm")["status"]["abort"] is True


def test_dry_run_reads_but_never_patches(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path
) -> None:
    rollout_fixture(kube, "promoted")
    statefulset_fixture(kube)
    isvc_fixture(kube)
    for pod_name in (ROLLOUT_POD, "shard-0", ISVC_POD):
        a = action(kube, journal, tmp_path, pod_name)
        assert a.apply(a.plan(), dry_run=True).result == DRY_RUN
    assert kube.patches() == []


def test_pods_of_one_object_roll_it_back_once_within_the_cooldown(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path
) -> None:
    rollout_fixture(kube, "promoted")
    first = action(kube, journal, tmp_path, ROLLOUT_POD, rollback_id=1)
    second = action(kube, journal, tmp_path, ROLLOUT_POD, rollback_id=2)
    plan1, plan2 = first.plan(), second.plan()
    assert first.apply(plan1, dry_run=False).result == SUCCEEDED
    out = second.apply(plan2, dry_run=False)
    assert out.result == SKIPPED and "rolled back 0s ago by rollback 1" in out.detail
    assert len(patches(kube, "rollouts")) == 1


# --- StatefulSet -----------------------------------------------------------------------------


def test_a_statefulset_is_undone_as_kubectl_does(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path
) -> None:
    """kubernetes/kubectl pkg/polymorphichelpers/rollback.go: StatefulSetRollbacker takes
    the ControllerRevision of the second-highest revision (findHistory) and sends its
    Data.Raw unchanged as types.StrategicMergePatchType."""
    statefulset_fixture(kube)
    a = action(kube, journal, tmp_path, "shard-0")
    plan = a.plan()
    assert (plan["from_revision"], plan["to_revision"]) == (3, 2)
    assert a.apply(plan, dry_run=False).result == SUCCEEDED
    ((path, body, ctype),) = patches(kube, "statefulsets")
    assert path.endswith("/statefulsets/shard")
    assert ctype == "application/strategic-merge-patch+json"
    assert set(body.pop("metadata")) == {"resourceVersion"}
    revision_2 = kube.get("controllerrevisions", "inference", "shard-2f2c2d")
    assert body == revision_2["data"]
    sts = kube.get("statefulsets", "inference", "shard")
    assert image_of(sts) == "shard:v2" and "$patch" not in sts["spec"]["template"]
    assert sts["status"]["updateRevision"] == "shard-2f2c2d"


def test_a_partitioned_rollout_stopped_midway_is_refused_unless_allowed(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path
) -> None:
    statefulset_fixture(kube, partition=2, midway=True)
    with pytest.raises(
        Refused, match=r"partitioned rollout stopped at partition 2.*allow_partitioned"
    ):
        action(kube, journal, tmp_path, "shard-0").plan()
    a = action(kube, journal, tmp_path, "shard-0", allow_partitioned=True)
    assert a.apply(a.plan(), dry_run=False).result == SUCCEEDED


def test_a_statefulset_with_one_revision_has_nothing_to_roll_back_to(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path
) -> None:
    statefulset_fixture(kube, revisions=1)
    with pytest.raises(ActionError, match="statefulset inference/shard: no earlier revision"):
        action(kube, journal, tmp_path, "shard-0").plan()


def test_a_statefulset_already_on_the_previous_template_is_skipped(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path
) -> None:
    statefulset_fixture(kube)
    sts = kube.get("statefulsets", "inference", "shard")
    sts["spec"]["template"]["spec"]["containers"][0]["image"] = "shard:v2"
    a = action(kube, journal, tmp_path, "shard-0")
    out = a.apply(a.plan(), dry_run=False)
    assert out.result == SKIPPED and "already matches revision 2" in out.detail
    assert kube.patches() == []


# --- KServe ----------------------------------------------------------------------------------


def test_a_canary_is_sent_back_to_zero_as_kserve_documents(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path
) -> None:
    """kserve/website docs/modelserving/v1beta1/rollout/canary-example.md, "Rollback and pin
    the previous model": the InferenceService applied again with canaryTrafficPercent: 0 —
    as a patch, the JSON merge patch of that one field."""
    isvc_fixture(kube, canary=10)
    a = action(kube, journal, tmp_path, ISVC_POD)
    plan = a.plan()
    assert plan["mode"] == "canary" and plan["to_revision"] == "sklearn-iris-predictor-00001"
    out = a.apply(plan, dry_run=False)
    assert out.result == SUCCEEDED and "10% -> 0%" in out.detail
    ((path, body, ctype),) = patches(kube, "inferenceservices")
    assert path.endswith("/inferenceservices/sklearn-iris")
    assert ctype == "application/merge-patch+json"
    assert set(body.pop("metadata")) == {"resourceVersion"}
    assert body == {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    isvc = kube.get("inferenceservices", "inference", "sklearn-iris")
    traffic = isvc["status"]["components"]["predictor"]["traffic"]
    assert traffic[0] == {
        "revisionName": "sklearn-iris-predictor-00001",
        "percent": 100,
        "tag": "prev",
    }
    assert isvc["spec"]["predictor"]["model"]["storageUri"].endswith("model-2"), "canary kept"


def test_a_canary_already_at_zero_is_skipped_and_one_without_a_previous_revision_fails(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path
) -> None:
    isvc_fixture(kube, canary=0)
    a = action(kube, journal, tmp_path, ISVC_POD)
    out = a.apply(a.plan(), dry_run=False)
    assert out.result == SKIPPED and "canaryTrafficPercent 0" in out.detail
    isvc_fixture(kube, canary=10, previous=False)
    with pytest.raises(ActionError, match="no previous rolled-out revision"):
        action(kube, journal, tmp_path, ISVC_POD).plan()
    assert kube.patches() == []


@pytest.mark.parametrize("raw", [False, True])
def test_without_a_canary_the_previous_recorded_spec_comes_back(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path, raw: bool
) -> None:
    # Raw-deployment mode has no traffic split: even with canaryTrafficPercent set, the
    # spec history is what rolls it back.
    isvc_fixture(kube, canary=None if not raw else 10, raw=raw, model="model-1")
    with pytest.raises(ActionError, match="no earlier spec recorded"):
        action(kube, journal, tmp_path, ISVC_POD).plan()  # it records model-1 on the way
    good = kube.get("inferenceservices", "inference", "sklearn-iris")["spec"]
    isvc_fixture(kube, canary=None if not raw else 10, raw=raw, model="model-2")
    a = action(kube, journal, tmp_path, ISVC_POD)
    plan = a.plan()
    assert plan["mode"] == "restore" and plan["spec"] == good
    assert a.apply(plan, dry_run=False).result == SUCCEEDED
    ((_path, body, ctype),) = patches(kube, "inferenceservices")
    assert ctype == "application/json-patch+json"
    assert body[1:] == [{"op": "replace", "path": "/spec", "value": good}]
    assert kube.get("inferenceservices", "inference", "sklearn-iris")["spec"] == good
    # The spec rolled back from is never the "previous" one again: no flip-flop.
    with pytest.raises(ActionError, match="no earlier spec recorded"):
        action(kube, journal, tmp_path, ISVC_POD, rollback_id=2).plan()


def test_the_spec_history_is_recorded_by_polling_and_bounded(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.rollback import journal as journal_mod
    from agent.rollback.history import SpecHistory
    from agent.rollback.policy import TargetSpec

    target = TargetSpec(
        "served",
        "kubernetes_workload",
        {
            "namespace": "{namespace}",
            "pod": "{pod}",
            "allowed_namespaces": ["inference"],
            "kinds": ["InferenceService"],
            "history_interval": 30.0,
            "kubeconfig": str(kube.kubeconfig(tmp_path / "kubeconfig")),
        },
    )
    refused: list[int] = []
    history = SpecHistory([target], journal, default_client_factory, lambda: refused.append(1))
    for i in range(12):
        isvc_fixture(kube, canary=None, model=f"model-{i}")
        assert history.poll()["recorded"] == 1
    assert history.poll() == {"recorded": 0, "unchanged": 1, "refused": 0}
    kept = journal.specs("inferenceservice:inference/sklearn-iris")
    assert len(kept) == journal_mod.SPECS_PER_OBJECT
    assert kept[-1]["spec"] == isvc_spec("model-11") and kept[0]["spec"] == isvc_spec("model-2")
    # Only opted-in objects are listed, and past the bound on objects a new one is refused.
    assert any("labelSelector=vigil.dev/rollback%3Denabled" in p for _m, p, _b in kube.requests)
    monkeypatch.setattr(journal_mod, "MAX_SPEC_OBJECTS", 1)
    other = copy.deepcopy(kube.get("inferenceservices", "inference", "sklearn-iris"))
    other["metadata"]["name"] = "other"
    kube.objects[("inferenceservices", "inference", "other")] = other
    assert history.poll()["refused"] == 1 and refused == [1]


# --- through the controller ------------------------------------------------------------------


def test_the_controller_journals_each_outcome_with_its_reason(tmp_path: Path) -> None:
    """A real controller process: a conflict twice is `failed` with the reason, a refusal
    `refused`, and each is answered, journaled and counted without stopping the worker."""
    import json

    from rbproc import ControllerProcess, alert, payload

    with FakeWorkloads() as kube:
        rollout_fixture(kube, "canary")
        statefulset_fixture(kube, opted_in=False)
        cfg = tmp_path / "rollback.yaml"
        cfg.write_text(
            json.dumps(
                {
                    "targets": {
                        "served": {
                            "action": "kubernetes_workload",
                            "namespace": "{namespace}",
                            "pod": "{pod}",
                            "allowed_namespaces": ["inference"],
                            "kinds": ["Rollout", "StatefulSet"],
                            "kubeconfig": str(kube.kubeconfig(tmp_path / "kc")),
                        }
                    },
                    "policy": [{"match_re": {"pod": ".+"}, "target": "served"}],
                }
            )
        )
        kube.conflicts = 2
        with ControllerProcess(["--config", str(cfg)], tmp_path / "s") as c:
            labels = {"action": "rollback", "namespace": "inference", "pod": ROLLOUT_POD}
            c.post(payload(alert(labels)))
            (rb,) = c.wait_done()
            assert rb["result"] == "failed", rb["detail"]
            assert "changed between read and patch twice" in rb["detail"]
            assert rb["plan"]["object"] == "rollout:inference/llm"
            sts = alert({**labels, "pod": "shard-0"}, fingerprint="s")
            c.post(payload(sts))
            rows = c.wait_done(2)
            assert rows[0]["result"] == "refused" and "has not opted in" in rows[0]["detail"]
            assert c.metric("vigil_rollbacks_total", result="failed") == 1
    assert kube.used <= RBAC
