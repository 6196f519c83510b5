"""Rolling back what owns the alert's pod — Deployment, Argo Rollout, StatefulSet, KServe
InferenceService — through the official client against the fake API server.

Every test's fake records the (group, resource, verb) of each request it served; the
fixture checks at the end that all of them are in the RBAC table the Role is built from,
and one test checks the other way: that rollbacks of every kind use every entry.
"""

from __future__ import annotations

import copy
import json
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

from agent.rollback import journal as journal_mod
from agent.rollback.actions.base import DRY_RUN, SKIPPED, SUCCEEDED, ActionError, Refused
from agent.rollback.actions.kserve import object_key
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


def test_without_a_status_subresource_the_abort_goes_to_the_main_resource(
    journal: Journal, tmp_path: Path
) -> None:
    """Argo Rollouts before v0.10 installed the Rollout CRD without the status subresource:
    PATCH .../status is 404 there, and the abort command sends the same patch to the
    Rollout itself."""
    with FakeWorkloads(status_subresource=False) as kube:
        rollout_fixture(kube, "canary")
        read_rv = kube.get("rollouts", "inference", "llm")["metadata"]["resourceVersion"]
        a = action(kube, journal, tmp_path, ROLLOUT_POD)
        assert a.apply(a.plan(), dry_run=False).result == SUCCEEDED
        sent = [
            (p, b, ct, code)
            for (m, p, b, ct), (_m, _p, code) in zip(kube.typed, kube.answered, strict=True)
            if m == "PATCH"
        ]
        base = "/apis/argoproj.io/v1alpha1/namespaces/inference/rollouts/llm"
        body = {"status": {"abort": True}, "metadata": {"resourceVersion": read_rv}}
        assert sent == [
            (f"{base}/status", body, "application/merge-patch+json", 404),
            (base, body, "application/merge-patch+json", 200),
        ]
        ro = kube.get("rollouts", "inference", "llm")
        assert ro["status"]["abort"] is True and image_of(ro) == "llm:v3", "spec untouched"
    assert kube.used <= RBAC


def _from_workload_ref(kube: FakeWorkloads) -> None:
    """The Rollout takes its pod template from a Deployment (spec.workloadRef) instead
    of carrying one (argo-rollouts docs/migrating.md, "Reference Deployment From
    Rollout")."""
    spec = kube.get("rollouts", "inference", "llm")["spec"]
    del spec["template"]
    spec["workloadRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm"}


def test_a_promoted_rollout_with_a_workload_ref_is_refused(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path
) -> None:
    rollout_fixture(kube, "promoted")
    _from_workload_ref(kube)
    with pytest.raises(
        Refused, match=r"rollout inference/llm takes its template from spec.workloadRef"
    ):
        action(kube, journal, tmp_path, ROLLOUT_POD).plan()
    assert kube.patches() == []
    # An update in progress has nothing to undo in the template: the abort still applies.
    rollout_fixture(kube, "canary")
    _from_workload_ref(kube)
    a = action(kube, journal, tmp_path, ROLLOUT_POD)
    assert a.apply(a.plan(), dry_run=False).result == SUCCEEDED
    assert kube.get("rollouts", "inference", "llm")["status"]["abort"] is True


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


def _conflict_case(kube: FakeWorkloads, journal: Journal, tmp_path: Path, case: str) -> str:
    """Sets up ``case`` and returns the pod whose alert rolls it back."""
    if case == "rollout-abort":
        rollout_fixture(kube, "canary")
    elif case == "rollout-undo":
        rollout_fixture(kube, "promoted")
    elif case == "statefulset-undo":
        statefulset_fixture(kube)
        return "shard-0"
    elif case == "kserve-canary":
        isvc_fixture(kube, canary=10)
        return ISVC_POD
    else:
        isvc_fixture(kube, canary=None, model="model-1")
        with pytest.raises(ActionError, match="no earlier spec recorded"):
            action(kube, journal, tmp_path, ISVC_POD).plan()  # records model-1
        isvc_fixture(kube, canary=None, model="model-2")
        return ISVC_POD
    return ROLLOUT_POD


CONFLICT_CASES = {
    # case: (resource patched, what the object shows once the rollback is applied)
    "rollout-abort": ("rollouts", lambda o: o["status"].get("abort") is True),
    "rollout-undo": ("rollouts", lambda o: image_of(o) == "llm:v2"),
    "statefulset-undo": ("statefulsets", lambda o: image_of(o) == "shard:v2"),
    "kserve-canary": (
        "inferenceservices",
        lambda o: o["spec"]["predictor"].get("canaryTrafficPercent") == 0,
    ),
    "kserve-restore": ("inferenceservices", lambda o: o["spec"] == isvc_spec("model-1")),
}


def _without_rv(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"].pop("resourceVersion")
    return out


@pytest.mark.parametrize("conflicts", [1, 2])
@pytest.mark.parametrize("case", sorted(CONFLICT_CASES))
def test_a_conflict_is_retried_once_then_fails_with_the_reason(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path, case: str, conflicts: int
) -> None:
    resource, applied = CONFLICT_CASES[case]
    name = {"rollouts": "llm", "statefulsets": "shard"}.get(resource, "sklearn-iris")
    a = action(kube, journal, tmp_path, _conflict_case(kube, journal, tmp_path, case))
    plan = a.plan()
    before = copy.deepcopy(kube.get(resource, "inference", name))
    assert not applied(before)
    kube.conflicts = conflicts
    if conflicts == 1:
        assert a.apply(plan, dry_run=False).result == SUCCEEDED
    else:
        with pytest.raises(ActionError, match=r"changed between read and patch twice.*409"):
            a.apply(plan, dry_run=False)
    answers = [code for m, p, code in kube.answered if m == "PATCH" and f"/{resource}/" in p]
    after = kube.get(resource, "inference", name)
    if conflicts == 1:
        assert answers == [409, 200], "read again, sent again, applied once"
        assert applied(after)
    else:
        assert answers == [409, 409]
        assert _without_rv(after) == _without_rv(before), "nothing applied"


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


def spec_history(
    kube: FakeWorkloads,
    journal: Journal,
    tmp_path: Path,
    refused: list[int],
    *,
    tokens: tuple[str, ...] = ("kube-token",),
) -> Any:
    """The controller's InferenceService history over one target per token (one
    kubeconfig each; a wrong token is a target whose LIST is answered 401)."""
    from agent.rollback.history import SpecHistory
    from agent.rollback.policy import TargetSpec

    targets = []
    for i, token in enumerate(tokens):
        kc = kube.kubeconfig(tmp_path / f"kubeconfig-{i}")
        doc = json.loads(kc.read_text())
        doc["users"][0]["user"]["token"] = token
        kc.write_text(json.dumps(doc))
        params = {
            "namespace": "{namespace}",
            "pod": "{pod}",
            "allowed_namespaces": ["inference"],
            "kinds": ["InferenceService"],
            "history_interval": 30.0,
            "kubeconfig": str(kc),
        }
        targets.append(TargetSpec(f"served-{i}", "kubernetes_workload", params))
    return SpecHistory(targets, journal, default_client_factory, lambda: refused.append(1))


def another_isvc(kube: FakeWorkloads, name: str, model: str = "model-2") -> str:
    """An opted-in InferenceService ``name`` beside sklearn-iris; returns its history key."""
    obj = copy.deepcopy(kube.get("inferenceservices", "inference", "sklearn-iris"))
    obj["metadata"].update(name=name, uid=f"{name}-uid")
    obj["spec"] = isvc_spec(model)
    kube.put("inferenceservices", obj)
    return object_key("inference", name)


def test_the_spec_history_is_recorded_by_polling_and_bounded(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused: list[int] = []
    history = spec_history(kube, journal, tmp_path, refused)
    for i in range(12):
        isvc_fixture(kube, canary=None, model=f"model-{i}")
        assert history.poll()["recorded"] == 1
    assert history.poll() == {"recorded": 0, "unchanged": 1, "refused": 0, "forgotten": 0}
    kept = journal.specs("inferenceservice:inference/sklearn-iris")
    assert len(kept) == journal_mod.SPECS_PER_OBJECT
    assert kept[-1]["spec"] == isvc_spec("model-11") and kept[0]["spec"] == isvc_spec("model-2")
    # Only opted-in objects are listed, and past the bound on objects a new one is refused.
    assert any("labelSelector=vigil.dev/rollback%3Denabled" in p for _m, p, _b in kube.requests)
    monkeypatch.setattr(journal_mod, "MAX_SPEC_OBJECTS", 1)
    another_isvc(kube, "other")
    assert history.poll()["refused"] == 1 and refused == [1]


def test_deleted_inferenceservices_free_their_place_in_the_history(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Models created and deleted over the journal's life, more than the bound on objects:
    the newest is always recorded, and the one that stayed keeps its history."""
    monkeypatch.setattr(journal_mod, "MAX_SPEC_OBJECTS", 3)
    refused: list[int] = []
    history = spec_history(kube, journal, tmp_path, refused)
    isvc_fixture(kube, canary=None, model="model-1")
    assert history.poll()["recorded"] == 1
    isvc_fixture(kube, canary=None, model="model-2")
    for i in range(10):
        key = another_isvc(kube, f"churn-{i}")
        counts = history.poll()
        assert counts == {
            "recorded": 1 + (i == 0),
            "unchanged": int(i > 0),
            "refused": 0,
            "forgotten": int(i > 0),
        }, i
        assert [r["spec"] for r in journal.specs(key)] == [isvc_spec("model-2")]
        del kube.objects[("inferenceservices", "inference", f"churn-{i}")]
    assert history.poll()["forgotten"] == 1 and refused == []
    assert not journal.specs(object_key("inference", "churn-9"))
    kept = journal.specs(object_key("inference", "sklearn-iris"))
    assert [r["spec"] for r in kept] == [isvc_spec("model-1"), isvc_spec("model-2")]
    # ...so its rollback still finds the spec before the bad one.
    plan = action(kube, journal, tmp_path, ISVC_POD).plan()
    assert plan["mode"] == "restore" and plan["spec"] == isvc_spec("model-1")


@pytest.mark.parametrize("how", ["list answered 503", "one of two targets unauthorised"])
def test_a_failed_list_forgets_nothing(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path, how: str
) -> None:
    refused: list[int] = []
    tokens = ("kube-token",) if how.startswith("list") else ("kube-token", "revoked")
    history = spec_history(kube, journal, tmp_path, refused, tokens=tokens)
    isvc_fixture(kube, canary=None)
    other = another_isvc(kube, "other")
    assert history.poll()["recorded"] == 2
    # Both deleted: an empty LIST would forget them, a failed one must not.
    kube.objects = {k: v for k, v in kube.objects.items() if k[0] != "inferenceservices"}
    if how.startswith("list"):
        kube.list_error = 503
    assert history.poll()["forgotten"] == 0
    assert journal.specs(other) and journal.specs(object_key("inference", "sklearn-iris"))
    if how.startswith("list"):
        kube.list_error = 0
        assert history.poll()["forgotten"] == 2
        assert not journal.specs(other)


def test_every_grant_in_the_rbac_table_is_used_by_a_rollback(
    kube: FakeWorkloads, journal: Journal, tmp_path: Path
) -> None:
    """The other direction of the fixture's check: one rollback of each kind, each path,
    and the history's poll need every (group, resource, verb) the Role grants, so the
    table (and the Role built from it) holds nothing the controller does not use."""
    steps = [
        (lambda: (llm_fixture(kube), deployment_pod(kube)), "llm-3abc-q8w9e"),
        (lambda: rollout_fixture(kube, "promoted"), ROLLOUT_POD),  # undo: the Rollout itself
        (lambda: statefulset_fixture(kube), "shard-0"),
        (lambda: isvc_fixture(kube, canary=10), ISVC_POD),
    ]
    for setup, pod_name in steps:
        setup()  # each replaces the ReplicaSets of the one before
        a = action(kube, journal, tmp_path, pod_name)
        assert a.apply(a.plan(), dry_run=False).result == SUCCEEDED, pod_name
    rollout_fixture(kube, "canary")  # abort: its status subresource
    # Another controller's journal: this one would hold the Rollout in its cooldown.
    other = Journal(tmp_path / "other.db")
    try:
        a = action(kube, other, tmp_path, ROLLOUT_POD)
        assert a.apply(a.plan(), dry_run=False).result == SUCCEEDED
    finally:
        other.close()
    # The history's LIST records the spec the canary rollback left (percent 0).
    assert spec_history(kube, journal, tmp_path, []).poll()["recorded"] == 1
    assert kube.used == RBAC, f"never used: {RBAC - kube.used}"


# --- through the controller ------------------------------------------------------------------


def test_the_controller_journals_each_outcome_with_its_reason(tmp_path: Path) -> None:
    """A real controller process: a conflict twice is `failed` with the reason, a refusal
    `refused`, and each is answered, journaled and counted without stopping the worker."""
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
