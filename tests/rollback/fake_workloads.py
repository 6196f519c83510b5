"""The fake API server of fake_kube.py, extended to the workloads models are served by.

Serves, for the official ``kubernetes`` client, besides the Deployment routes:

  GET   /api/v1/namespaces/{ns}/pods/{name}
  GET   /apis/apps/v1/namespaces/{ns}/replicasets/{name}
  GET   /apis/apps/v1/namespaces/{ns}/controllerrevisions?labelSelector=...
  GET   /apis/apps/v1/namespaces/{ns}/statefulsets/{name}
  PATCH /apis/apps/v1/namespaces/{ns}/statefulsets/{name}            (strategic merge)
  GET   /apis/argoproj.io/v1alpha1/namespaces/{ns}/rollouts/{name}
  PATCH /apis/argoproj.io/v1alpha1/namespaces/{ns}/rollouts/{name}[/status]   (json, merge)
  GET   /apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices[/{name}]
  PATCH /apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices/{name}  (json, merge)

as the API server does it where it matters here: every stored object has a
``resourceVersion`` that each write bumps, and a patch whose result carries another
``resourceVersion`` than the stored one is answered 409 Conflict; the status subresource
takes only ``status`` and the main resource ignores it; ``metadata.generation`` moves with
the spec. ``conflicts = N`` makes the next N patches find the object written by someone
else in between. ``status_subresource=False`` serves Rollouts as a cluster whose Rollout
CRD has no status subresource (Argo Rollouts before v0.10): PATCH .../status is 404 and the
main resource takes ``status`` too. ``list_error = N`` answers every LIST of
InferenceServices with HTTP N (RBAC revoked, API server in trouble); ``answered`` holds the
(method, path, HTTP status) of every request served. Then it does the part of each
controller a rollback relies on (Argo's undo makes the matching ReplicaSet the newest
revision, the StatefulSet controller does the same with a ControllerRevision). Every
request is mapped to the (group, resource, verb) RBAC would check, in ``used``.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from fake_kube import FakeKube, _selects, template
from kubeapi import status

from agent.rollback.actions.argo import HASH_LABEL as ROLLOUT_HASH
from agent.rollback.actions.argo import REVISION as ROLLOUT_REVISION

OPT_IN = {"vigil.dev/rollback": "enabled"}
_CORE = re.compile(r"^/api/v1/namespaces/([^/]+)/(pods)/([^/]+)$")
_GROUPED = re.compile(
    r"^/apis/([^/]+)/([^/]+)/namespaces/([^/]+)/([a-z]+)(?:/([^/]+))?(?:/(status))?$"
)
KINDS_BY_RESOURCE = {
    "statefulsets": "StatefulSet",
    "rollouts": "Rollout",
    "inferenceservices": "InferenceService",
    "controllerrevisions": "ControllerRevision",
    "pods": "Pod",
}


def merge_patch(target: Any, patch: Any, strategic: bool = False) -> Any:
    """RFC 7386, and the one strategic directive kubectl's undo uses ($patch: replace)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if strategic and patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v, strategic)
    return out


def _parts(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.strip("/").split("/")]


def json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for op in ops:
        *head, last = _parts(op["path"])
        parent: Any = doc
        for p in head:
            parent = parent[int(p)] if isinstance(parent, list) else parent.setdefault(p, {})
        if op["op"] in ("replace", "add"):
            parent[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            parent.pop(last)
        elif op["op"] == "test":
            if parent.get(last) != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        else:
            raise ValueError(f"unsupported op {op['op']}")
    return doc


def rbac_of(method: str, path: str) -> tuple[str, str, str]:
    """The (API group, resource, verb) RBAC checks for a request this server answers."""
    m = _CORE.match(path)
    if m:
        return "", m.group(2), "get" if method == "GET" else method.lower()
    m = _GROUPED.match(path)
    if not m:
        return "?", path, method.lower()
    group, _v, _ns, resource, name, sub = m.groups()
    verb = {"GET": "get" if name else "list", "PATCH": "patch"}.get(method, method.lower())
    return group, resource + (f"/{sub}" if sub else ""), verb


class FakeWorkloads(FakeKube):
    def __init__(self, token: str = "kube-token", *, status_subresource: bool = True) -> None:
        super().__init__(token)
        self.status_subresource = status_subresource
        self.list_error = 0
        self.answered: list[tuple[str, str, int]] = []
        # (resource, namespace, name) -> object; ReplicaSets stay in self.replicasets.
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.rv = 100
        self.conflicts = 0
        self.used: set[tuple[str, str, str]] = set()
        # (method, path, body, content type) of every authorised request.
        self.typed: list[tuple[str, str, Any, str]] = []

    # --- storing ---------------------------------------------------------------------------

    def next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def put(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"{resource}-{meta['name']}-uid")
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = self.next_rv()
        obj.setdefault("kind", KINDS_BY_RESOURCE.get(resource, resource))
        self.objects[(resource, meta["namespace"], meta["name"])] = obj
        return obj

    def get(self, resource: str, ns: str, name: str) -> dict[str, Any]:
        return self.objects[(resource, ns, name)]

    def patches_to(self, resource: str) -> list[tuple[str, str, Any]]:
        """(path, content type, body) of every PATCH sent to ``resource``."""
        return [
            (p, ct, body) for m, p, body, ct in self.typed if m == "PATCH" and f"/{resource}/" in p
        ]

    # --- serving ---------------------------------------------------------------------------

    def route(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, content_type: str
    ) -> tuple[int, dict[str, Any]]:
        self.typed.append((method, path, copy.deepcopy(body), content_type))
        self.used.add(rbac_of(method, path))
        code, doc = self._route(method, path, query, body, content_type)
        self.answered.append((method, path, code))
        return code, doc

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, content_type: str
    ) -> tuple[int, dict[str, Any]]:
        selector = query.get("labelSelector", [""])[0]
        m = _CORE.match(path)
        if m and method == "GET":
            return self._get("pods", m.group(1), m.group(3))
        m = _GROUPED.match(path)
        if m:
            _group, _v, ns, resource, name, sub = m.groups()
            if resource == "replicasets" and name and method == "GET":
                for rs in self.replicasets.get(ns, []):
                    if rs["metadata"]["name"] == name:
                        return 200, rs
                return 404, status(404, f'replicasets.apps "{name}" not found', "NotFound")
            if resource in ("controllerrevisions", "inferenceservices") and not name:
                if resource == "inferenceservices" and self.list_error:
                    return self.list_error, status(
                        self.list_error, f"inferenceservices is unavailable ({self.list_error})"
                    )
                items = [
                    o
                    for (r, n, _), o in self.objects.items()
                    if r == resource
                    and n == ns
                    and _selects(selector, o["metadata"].get("labels", {}))
                ]
                return 200, {"kind": "List", "items": copy.deepcopy(items)}
            if resource in ("statefulsets", "rollouts", "inferenceservices") and name:
                if method == "GET" and not sub:
                    return self._get(resource, ns, name)
                if method == "PATCH" and sub and not self._has_status(resource):
                    # What the API server answers for a subresource the CRD does not declare.
                    return 404, status(404, "the server could not find the requested resource")
                if method == "PATCH":
                    return self._patch(resource, ns, name, sub, body, content_type)
        return super().route(method, path, query, body, content_type)

    def _has_status(self, resource: str) -> bool:
        return self.status_subresource or resource != "rollouts"

    def _get(self, resource: str, ns: str, name: str) -> tuple[int, dict[str, Any]]:
        obj = self.objects.get((resource, ns, name))
        if obj is None:
            return 404, status(404, f'{resource} "{name}" not found', "NotFound")
        return 200, copy.deepcopy(obj)

    def _patch(
        self, resource: str, ns: str, name: str, sub: str | None, body: Any, content_type: str
    ) -> tuple[int, dict[str, Any]]:
        current = self.objects.get((resource, ns, name))
        if current is None:
            return 404, status(404, f'{resource} "{name}" not found', "NotFound")
        if self.conflicts:
            self.conflicts -= 1
            current["metadata"]["resourceVersion"] = self.next_rv()  # someone else wrote
        allowed = {
            "statefulsets": {
                "application/strategic-merge-patch+json",
                "application/json-patch+json",
                "application/merge-patch+json",
            },
        }.get(resource, {"application/json-patch+json", "application/merge-patch+json"})
        if content_type not in allowed:
            return 415, status(
                415, f"the body of the request was in an unknown format: {content_type}"
            )
        try:
            if content_type == "application/json-patch+json":
                new = json_patch(current, body)
            else:
                new = merge_patch(current, body, content_type.startswith("application/strategic"))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return 422, status(422, f"cannot apply patch: {exc}", "Invalid")
        if new["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            return 409, status(
                409,
                f'Operation cannot be fulfilled on {resource} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
                "Conflict",
            )
        if sub == "status":
            new = {**copy.deepcopy(current), "status": new.get("status", {})}
        elif self._has_status(resource):
            new["status"] = copy.deepcopy(current.get("status", {}))
        if new.get("spec") != current.get("spec"):
            new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        new["metadata"]["resourceVersion"] = self.next_rv()
        self.objects[(resource, ns, name)] = new
        getattr(self, f"_reconcile_{resource}")(ns, current, new)
        return 200, copy.deepcopy(new)

    # --- what each controller does after the patch ------------------------------------------

    def _reconcile_rollouts(self, ns: str, old: dict[str, Any], new: dict[str, Any]) -> None:
        if new.get("status", {}).get("abort") and not old.get("status", {}).get("abort"):
            new["status"]["phase"] = "Degraded"
            new["status"]["message"] = "RolloutAborted: Rollout aborted update"
        if new["spec"].get("template") == old["spec"].get("template"):
            return
        sets = [rs for rs in self.replicasets.get(ns, []) if _owned(rs, new)]
        top = max((int(rs["metadata"]["annotations"][ROLLOUT_REVISION]) for rs in sets), default=0)
        for rs in sets:
            if _no_rollout_hash(rs["spec"]["template"]) == _no_rollout_hash(
                new["spec"]["template"]
            ):
                rs["metadata"]["annotations"][ROLLOUT_REVISION] = str(top + 1)
                pod_hash = rs["metadata"]["labels"][ROLLOUT_HASH]
                new["status"].update(currentPodHash=pod_hash, stableRS=pod_hash)

    def _reconcile_statefulsets(self, ns: str, old: dict[str, Any], new: dict[str, Any]) -> None:
        if new["spec"]["template"] == old["spec"]["template"]:
            return
        revs = [
            o
            for (r, n, _), o in self.objects.items()
            if r == "controllerrevisions" and n == ns and _owned(o, new)
        ]
        top = max((int(r["revision"]) for r in revs), default=0)
        want = {"spec": {"template": {**new["spec"]["template"], "$patch": "replace"}}}
        for r in revs:
            if r["data"] == want:
                r["revision"] = top + 1
                new["status"].update(
                    updateRevision=r["metadata"]["name"], currentRevision=r["metadata"]["name"]
                )

    def _reconcile_inferenceservices(
        self, ns: str, old: dict[str, Any], new: dict[str, Any]
    ) -> None:
        pred = new["spec"].get("predictor", {})
        comp = new.get("status", {}).get("components", {}).get("predictor")
        if comp and pred.get("canaryTrafficPercent") == 0:
            # All traffic on the previous rolled-out revision (KServe's PropagateStatus).
            comp["traffic"] = [
                {"revisionName": comp["previousRolledoutRevision"], "percent": 100, "tag": "prev"},
                {"revisionName": comp["latestReadyRevision"], "percent": 0, "latestRevision": True},
            ]


def _owned(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    uid = owner["metadata"]["uid"]
    return any(
        r.get("uid") == uid and r.get("controller")
        for r in obj["metadata"].get("ownerReferences", [])
    )


def _no_rollout_hash(t: dict[str, Any]) -> dict[str, Any]:
    t = copy.deepcopy(t)
    t.get("metadata", {}).get("labels", {}).pop(ROLLOUT_HASH, None)
    return t


def owner_ref(obj: dict[str, Any], api_version: str) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod(
    kube: FakeWorkloads,
    name: str,
    *,
    owner: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    namespace: str = "inference",
) -> dict[str, Any]:
    """A Pod as the API server returns it (core/v1), with its controller reference."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [owner]
    return kube.put("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {}})


# --- Argo Rollouts -------------------------------------------------------------------------
# Shapes from argoproj/argo-rollouts: manifests/crds/rollout-crd.yaml (spec.strategy.canary
# .steps, status.currentPodHash/stableRS/abort/pauseConditions/phase), the getting-started
# example (docs/getting-started.md: rollouts-demo, setWeight 20 then pause) and the
# ReplicaSets the controller makes (label rollouts-pod-template-hash, annotation
# rollout.argoproj.io/revision, controller reference to the Rollout).


def rollout_fixture(
    kube: FakeWorkloads,
    state: str = "canary",
    *,
    opted_in: bool = True,
    strategy: str = "canary",
    namespace: str = "inference",
) -> dict[str, Any]:
    """``llm`` with revisions 1..3 (images llm:v1..v3). ``state``: "canary" (update to v3
    paused at step 1 of 2, weight 20), "promoted" (v3 stable), "aborting" (an AnalysisRun
    failed: status.abort true), "first" (v1 only, promoted: nothing to undo)."""
    hashes = {1: "5d7b8c9f1", 2: "6c8d9e0a2", 3: "7e9f0a1b3"}
    revisions = [1] if state == "first" else [1, 2, 3]
    current = revisions[-1]
    stable = 2 if state in ("canary", "aborting") else current
    steps = {"steps": [{"setWeight": 20}, {"pause": {}}]}
    spec_strategy = (
        {"canary": steps}
        if strategy == "canary"
        else {
            "blueGreen": {
                "activeService": "llm-active",
                "previewService": "llm-preview",
                "autoPromotionEnabled": False,
            }
        }
    )
    status_: dict[str, Any] = {
        "currentPodHash": hashes[current],
        "stableRS": hashes[stable],
        "observedGeneration": "3",
        "phase": "Healthy" if stable == current else "Paused",
        "replicas": 2,
        "readyReplicas": 2,
    }
    if strategy == "canary":
        status_["currentStepIndex"] = 2 if stable == current else 1
    else:
        status_["blueGreen"] = {
            "activeSelector": hashes[stable],
            "previewSelector": hashes[current],
        }
    if state == "canary":
        status_["pauseConditions"] = [
            {"reason": "CanaryPauseStep", "startTime": "2026-11-30T10:00:00Z"}
        ]
        status_["controllerPause"] = True
    if state == "aborting":
        status_.update(
            abort=True,
            phase="Degraded",
            message="RolloutAborted: Rollout aborted update to revision 3: "
            'Metric "success-rate" assessed Failed',
        )
    ro = kube.put(
        "rollouts",
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {
                "name": "llm",
                "namespace": namespace,
                "labels": {"app": "llm", **(OPT_IN if opted_in else {})},
                "annotations": {ROLLOUT_REVISION: str(current)},
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "llm"}},
                "template": template(f"llm:v{current}"),
                "strategy": spec_strategy,
            },
            "status": status_,
        },
    )
    ref = owner_ref(ro, "argoproj.io/v1alpha1")
    sets = []
    for rev in revisions:
        t = template(f"llm:v{rev}")
        t["metadata"]["labels"][ROLLOUT_HASH] = hashes[rev]
        sets.append(
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": f"llm-{hashes[rev]}",
                    "namespace": namespace,
                    "uid": f"rs-{hashes[rev]}",
                    "labels": {"app": "llm", ROLLOUT_HASH: hashes[rev]},
                    "annotations": {ROLLOUT_REVISION: str(rev)},
                    "ownerReferences": [ref],
                },
                "spec": {"template": t},
            }
        )
    kube.replicasets[namespace] = sets
    rs = sets[-1]
    pod(
        kube,
        f"llm-{hashes[current]}-x7k2p",
        owner=owner_ref(rs, "apps/v1"),
        labels=dict(rs["metadata"]["labels"]),
        namespace=namespace,
    )
    return ro


# --- StatefulSet ----------------------------------------------------------------------------
# Shapes from the apps/v1 API (StatefulSet, ControllerRevision) as the StatefulSet controller
# writes them: a ControllerRevision per template, named <sts>-<hash>, labelled with the
# StatefulSet's selector and controller-revision-hash, owned by the StatefulSet, its data
# {"spec":{"template":{...,"$patch":"replace"}}} (pkg/controller/statefulset/stateful_set_utils.go
# getPatch), status.currentRevision/updateRevision naming them.


def statefulset_fixture(
    kube: FakeWorkloads,
    *,
    revisions: int = 3,
    partition: int = 0,
    midway: bool = False,
    opted_in: bool = True,
    namespace: str = "inference",
) -> dict[str, Any]:
    """``shard`` (an LLM server sharded over 4 pods) at revision ``revisions`` (images
    shard:v1..). ``midway``: a partitioned update stopped with pods 2..3 updated."""
    names = {r: f"shard-{r}f{r}c{r}d" for r in range(1, revisions + 1)}
    top = revisions
    sts = kube.put(
        "statefulsets",
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {
                "name": "shard",
                "namespace": namespace,
                "labels": {"app": "shard", **(OPT_IN if opted_in else {})},
            },
            "spec": {
                "replicas": 4,
                "serviceName": "shard",
                "selector": {"matchLabels": {"app": "shard"}},
                "template": template(f"shard:v{top}") | {"metadata": {"labels": {"app": "shard"}}},
                "updateStrategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"partition": partition},
                },
            },
            "status": {
                "replicas": 4,
                "updatedReplicas": 2 if midway else 4,
                "currentRevision": names[top - 1] if midway else names[top],
                "updateRevision": names[top],
            },
        },
    )
    ref = owner_ref(sts, "apps/v1")
    for r, name in names.items():
        t = template(f"shard:v{r}") | {"metadata": {"labels": {"app": "shard"}}}
        kube.put(
            "controllerrevisions",
            {
                "apiVersion": "apps/v1",
                "kind": "ControllerRevision",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {"app": "shard", "controller-revision-hash": name.split("-")[1]},
                    "ownerReferences": [ref],
                },
                "revision": r,
                "data": {"spec": {"template": {**t, "$patch": "replace"}}},
            },
        )
    pod(kube, "shard-0", owner=ref, labels={"app": "shard"}, namespace=namespace)
    return sts


# --- KServe ----------------------------------------------------------------------------------
# Shapes from kserve/website docs/modelserving/v1beta1/rollout/canary-example.md (sklearn-iris,
# canaryTrafficPercent 10, PREVROLLEDOUTREVISION/LATESTREADYREVISION) and the v1beta1 CRD
# (config/crd/full/serving.kserve.io_inferenceservices.yaml: status.components.predictor
# .latestReadyRevision/latestCreatedRevision/previousRolledoutRevision/latestRolledoutRevision
# /traffic). Predictor pods carry serving.kserve.io/inferenceservice in both modes; in
# serverless mode their controller chain is Knative's (ReplicaSet -> Deployment owned by a
# Knative Revision).


def isvc_spec(model: str, canary: int | None = None) -> dict[str, Any]:
    predictor: dict[str, Any] = {
        "model": {
            "modelFormat": {"name": "sklearn"},
            "storageUri": f"gs://kfserving-examples/models/sklearn/1.0/{model}",
        }
    }
    if canary is not None:
        predictor["canaryTrafficPercent"] = canary
    return {"predictor": predictor}


def isvc_fixture(
    kube: FakeWorkloads,
    *,
    canary: int | None = 10,
    previous: bool = True,
    raw: bool = False,
    opted_in: bool = True,
    model: str = "model-2",
    namespace: str = "inference",
) -> dict[str, Any]:
    """``sklearn-iris``: ``canary`` percent on revision 00002 over 00001 (None: no canary,
    00002 fully rolled out). ``previous=False``: the first revision, nothing rolled out
    before it. ``raw``: RawDeployment mode (no Knative, no traffic split)."""
    rev = "sklearn-iris-predictor-0000{}"
    comp: dict[str, Any] = {
        "latestCreatedRevision": rev.format(2),
        "latestReadyRevision": rev.format(2),
        "url": "http://sklearn-iris-predictor.inference.example.com",
    }
    if canary is not None and previous:
        comp.update(
            previousRolledoutRevision=rev.format(1),
            latestRolledoutRevision=rev.format(1),
            traffic=[
                {"revisionName": rev.format(1), "percent": 100 - canary, "tag": "prev"},
                {"revisionName": rev.format(2), "percent": canary, "latestRevision": True},
            ],
        )
    else:
        comp.update(
            latestRolledoutRevision=rev.format(2),
            traffic=[{"revisionName": rev.format(2), "percent": 100, "latestRevision": True}],
        )
    annotations = {"serving.kserve.io/deploymentMode": "RawDeployment"} if raw else {}
    isvc = kube.put(
        "inferenceservices",
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {
                "name": "sklearn-iris",
                "namespace": namespace,
                "labels": dict(OPT_IN) if opted_in else {},
                "annotations": annotations,
            },
            "spec": isvc_spec(model, canary),
            "status": {
                "url": "http://sklearn-iris.inference.example.com",
                "components": {"predictor": comp},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        },
    )
    # The Knative chain above the pod: a ReplicaSet of a Deployment that a Knative
    # Revision owns; resolution must stop at the label, never walk into it.
    knative_rs = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": "sklearn-iris-predictor-00002-deployment-5bd9ff46f8",
            "namespace": namespace,
            "uid": "knative-rs-uid",
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": "sklearn-iris-predictor-00002-deployment",
                    "uid": "kn-dep",
                    "controller": True,
                }
            ],
        },
        "spec": {"template": template("kserve/sklearnserver:v0.14.0")},
    }
    kube.replicasets.setdefault(namespace, []).append(knative_rs)
    # The Deployment above it, as the agent names the pod's workload; KServe's labels
    # reach it through the Knative Revision's template.
    kube.deployments[(namespace, "sklearn-iris-predictor-00002-deployment")] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "sklearn-iris-predictor-00002-deployment",
            "namespace": namespace,
            "uid": "kn-dep",
            "labels": {
                "serving.kserve.io/inferenceservice": "sklearn-iris",
                "serving.knative.dev/revision": "sklearn-iris-predictor-00002",
            },
            "ownerReferences": [
                {
                    "apiVersion": "serving.knative.dev/v1",
                    "kind": "Revision",
                    "name": "sklearn-iris-predictor-00002",
                    "uid": "kn-rev",
                    "controller": True,
                }
            ],
        },
        "spec": {"template": template("kserve/sklearnserver:v0.14.0")},
    }
    pod(
        kube,
        "sklearn-iris-predictor-00002-deployment-5bd9ff46f8-shtzd",
        owner=owner_ref(knative_rs, "apps/v1"),
        labels={"serving.kserve.io/inferenceservice": "sklearn-iris", "component": "predictor"},
        namespace=namespace,
    )
    return isvc


def deployment_pod(kube: FakeWorkloads, namespace: str = "inference") -> dict[str, Any]:
    """A pod of fake_kube.llm_fixture's Deployment (its revision-3 ReplicaSet)."""
    rs = next(r for r in kube.replicasets[namespace] if r["metadata"]["name"] == "llm-3abc")
    rs.setdefault("metadata", {}).setdefault("uid", "rs-3abc")
    return pod(
        kube,
        "llm-3abc-q8w9e",
        owner={
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": "llm-3abc",
            "uid": "rs-3abc",
            "controller": True,
        },
        labels={"app": "llm", "pod-template-hash": "3abc"},
        namespace=namespace,
    )


def as_json(body: Any) -> str:
    return json.dumps(body, sort_keys=True)
