"""The pure parts of the workload actions: owner walks, states, preconditions."""

from __future__ import annotations

from typing import Any

import pytest

from agent.rollback.actions.argo import previous_replicaset, update_in_progress
from agent.rollback.actions.base import Refused
from agent.rollback.actions.kserve import canary, previous_spec
from agent.rollback.actions.kube_api import JSON_PATCH, MERGE_PATCH, with_precondition
from agent.rollback.actions.owners import MAX_CALLS, resolve_owner, resolve_workload
from agent.rollback.actions.statefulset import partition_midway


def ref(kind: str, name: str, api: str = "apps/v1", controller: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": api,
        "kind": kind,
        "name": name,
        "uid": f"{name}-uid",
        "controller": controller,
    }


def obj(*refs: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"ownerReferences": list(refs), "labels": labels or {}}}


class Reads:
    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        self.objects = objects
        self.calls: list[str] = []

    def __call__(self, _ns: str, name: str) -> dict[str, Any]:
        self.calls.append(name)
        return self.objects[name]


@pytest.mark.parametrize(
    ("objects", "kind", "name"),
    [
        ({"p": obj(ref("StatefulSet", "s"))}, "StatefulSet", "s"),
        ({"p": obj(ref("ReplicaSet", "r")), "r": obj(ref("Deployment", "d"))}, "Deployment", "d"),
        (
            {
                "p": obj(ref("ReplicaSet", "r")),
                "r": obj(ref("Rollout", "ro", "argoproj.io/v1alpha1")),
            },
            "Rollout",
            "ro",
        ),
        # The KServe label wins over any owner.
        (
            {"p": obj(ref("ReplicaSet", "r"), labels={"serving.kserve.io/inferenceservice": "i"})},
            "InferenceService",
            "i",
        ),
        # Only the controller reference counts.
        (
            {"p": obj(ref("Job", "j", controller=False), ref("StatefulSet", "s"))},
            "StatefulSet",
            "s",
        ),
    ],
)
def test_owner_walks(objects: dict[str, dict[str, Any]], kind: str, name: str) -> None:
    reads = Reads(objects)
    owner = resolve_owner("ns", "p", reads, reads)
    assert (owner.kind, owner.name, owner.namespace) == (kind, name, "ns")
    assert len(reads.calls) <= MAX_CALLS


@pytest.mark.parametrize(
    ("objects", "message"),
    [
        ({"p": obj()}, "Pod/p has no controller"),
        ({"p": obj(ref("DaemonSet", "d"))}, "controlled by DaemonSet/d"),
        # A "Rollout" of another API group is not Argo's.
        (
            {"p": obj(ref("ReplicaSet", "r")), "r": obj(ref("Rollout", "x", "example.com/v1"))},
            "Rollout/x (example.com/v1)",
        ),
        # A ReplicaSet under a ReplicaSet is not followed further.
        ({"p": obj(ref("ReplicaSet", "r")), "r": obj(ref("ReplicaSet", "q"))}, "ReplicaSet/q"),
        ({"p": obj(ref("ReplicaSet", "r")), "r": obj()}, "ReplicaSet/r has no controller"),
    ],
)
def test_owner_walks_that_are_refused(objects: dict[str, dict[str, Any]], message: str) -> None:
    reads = Reads(objects)
    with pytest.raises(Refused, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_owner("ns", "p", reads, reads)
    assert len(reads.calls) <= MAX_CALLS


def test_workload_walks() -> None:
    reads = Reads(
        {
            "r": obj(ref("Rollout", "ro", "argoproj.io/v1alpha1")),
            "rd": obj(ref("Deployment", "d")),
            "d": obj(),
            "k": obj(labels={"serving.kserve.io/inferenceservice": "i"}),
            "orphan": obj(),
        }
    )
    assert resolve_workload("ns", "ReplicaSet", "r", reads, reads).kind == "Rollout"
    got = resolve_workload("ns", "ReplicaSet", "rd", reads, reads)
    assert (got.kind, got.name) == ("Deployment", "d")
    assert resolve_workload("ns", "Deployment", "k", reads, reads).name == "i"
    assert resolve_workload("ns", "StatefulSet", "s", reads, reads).kind == "StatefulSet"
    with pytest.raises(Refused, match="ReplicaSet/orphan is controlled by nothing"):
        resolve_workload("ns", "ReplicaSet", "orphan", reads, reads)
    with pytest.raises(Refused, match="DaemonSet/x is not a kind"):
        resolve_workload("ns", "DaemonSet", "x", reads, reads)


def test_rollout_states() -> None:
    def ro(current: str | None, stable: str | None) -> dict[str, Any]:
        return {"status": {"currentPodHash": current, "stableRS": stable}}

    assert update_in_progress(ro("b", "a"))
    assert not update_in_progress(ro("a", "a"))
    assert not update_in_progress(ro(None, "a")) and not update_in_progress({})
    owner = {"metadata": {"uid": "u"}}
    mine = [ref("Rollout", "x")]
    mine[0]["uid"] = "u"

    def rs(rev: str, refs: list[dict[str, Any]] = mine) -> dict[str, Any]:
        return {
            "metadata": {
                "name": rev,
                "annotations": {"rollout.argoproj.io/revision": rev},
                "ownerReferences": refs,
            }
        }

    latest, prev = previous_replicaset(owner, [rs("2"), rs("10"), rs("9", []), rs("3"), rs("x")])
    assert latest == 10 and prev is not None and prev["metadata"]["name"] == "3"
    assert previous_replicaset(owner, [rs("1")]) == (1, None)


def test_statefulset_partition() -> None:
    def sts(
        partition: int, current: str, update: str, kind: str = "RollingUpdate"
    ) -> dict[str, Any]:
        return {
            "spec": {"updateStrategy": {"type": kind, "rollingUpdate": {"partition": partition}}},
            "status": {"currentRevision": current, "updateRevision": update},
        }

    assert partition_midway(sts(2, "a", "b")) == 2
    assert partition_midway(sts(2, "b", "b")) == 0  # the partition has nothing left to hold
    assert partition_midway(sts(0, "a", "b")) == 0  # a plain rolling update in progress
    assert partition_midway(sts(2, "a", "b", "OnDelete")) == 0
    assert partition_midway({}) == 0


def test_kserve_canary_and_history() -> None:
    def isvc(pct: int | None, mode: str = "") -> dict[str, Any]:
        pred = {} if pct is None else {"canaryTrafficPercent": pct}
        ann = {"serving.kserve.io/deploymentMode": mode} if mode else {}
        return {"metadata": {"annotations": ann}, "spec": {"predictor": pred}}

    assert canary(isvc(10))[0] == 10 and canary(isvc(0))[0] == 0
    assert canary(isvc(100))[0] is None and canary(isvc(None))[0] is None
    assert canary(isvc(10, "RawDeployment"))[0] is None and canary(isvc(10, "Standard"))[0] is None
    assert canary(isvc(10, "Serverless"))[0] == 10
    rows = [
        {"digest": "a", "rolled_back": 0},
        {"digest": "b", "rolled_back": 1},
        {"digest": "c", "rolled_back": 0},
    ]
    assert previous_spec(rows, "c") == rows[0]
    assert previous_spec(rows, "a") == rows[2]
    assert previous_spec(rows[:1], "a") is None


def test_preconditions_keep_the_upstream_body_intact() -> None:
    merge = {"status": {"abort": True}}
    assert with_precondition(merge, MERGE_PATCH, "7") == {
        "status": {"abort": True},
        "metadata": {"resourceVersion": "7"},
    }
    assert merge == {"status": {"abort": True}}, "the upstream body is not modified"
    ops = [{"op": "replace", "path": "/spec/template", "value": {}}]
    assert with_precondition(ops, JSON_PATCH, "7") == [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": "7"},
        *ops,
    ]
