"""A local fake of the few Kubernetes API endpoints a Deployment rollback uses.

Serves, over real HTTP for the official ``kubernetes`` client:

  GET   /apis/apps/v1/namespaces/{ns}/deployments/{name}
  PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}   (application/json-patch+json)
  GET   /apis/apps/v1/namespaces/{ns}/replicasets?labelSelector=k=v,...

and does what the deployment controller does after a template change: the ReplicaSet
whose template matches becomes the newest revision, and so does the Deployment. As the API
server does, each stored Deployment has a ``resourceVersion`` that every write bumps, and a
patch whose result carries another ``resourceVersion`` than the stored one is answered 409
Conflict with nothing applied; ``conflicts = N`` makes the next N patches find the
Deployment written by someone else in between (``meddle``, when set, is that write).
Requests without the expected bearer token get 401. Every request is recorded for
assertions; ``applied`` holds the patches that were applied.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubeapi import FakeKubeServer, read_json, reply_json, status

REVISION = "deployment.kubernetes.io/revision"
_DEPLOYMENT = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments/([^/]+)$")
_REPLICASETS = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/replicasets$")


def _no_hash(template: dict[str, Any]) -> dict[str, Any]:
    t = copy.deepcopy(template)
    t.get("metadata", {}).get("labels", {}).pop("pod-template-hash", None)
    return t


def _pointer_set(doc: dict[str, Any], path: str, value: Any) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.strip("/").split("/")]
    for p in parts[:-1]:
        doc = doc.setdefault(p, {})
    doc[parts[-1]] = value


def _selects(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class FakeKube(FakeKubeServer):
    methods = ("GET", "PATCH")
    # Requests are short; shutdown is noticed sooner than the default half second.
    poll_interval = 0.05
    user = "vigil"

    def __init__(self, token: str = "kube-token") -> None:
        self.token = token
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.replicasets: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.applied: list[Any] = []
        self.rv = 100
        self.conflicts = 0
        self.meddle: Callable[[dict[str, Any]], None] | None = None
        self.lock = threading.Lock()
        super().__init__()

    def next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        body = read_json(h)
        with self.lock:
            self.requests.append((method, h.path, body))
            if h.headers.get("Authorization") != f"Bearer {self.token}":
                reply_json(h, 401, status(401, "Unauthorized"))
                return
            code, doc = self.route(
                method, url.path, parse_qs(url.query), body, h.headers.get("Content-Type", "")
            )
        reply_json(h, code, doc)

    def patches(self) -> list[Any]:
        return [body for method, _, body in self.requests if method == "PATCH"]

    def route(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, content_type: str
    ) -> tuple[int, dict[str, Any]]:
        m = _DEPLOYMENT.match(path)
        if m:
            dep = self.deployments.get((m.group(1), m.group(2)))
            if dep is None:
                return 404, status(404, f'deployments.apps "{m.group(2)}" not found')
            if method == "GET":
                return 200, dep
            if method == "PATCH":
                return self._patch_deployment(m.group(1), m.group(2), dep, body, content_type)
        m = _REPLICASETS.match(path)
        if m and method == "GET":
            selector = query.get("labelSelector", [""])[0]
            items = [
                rs
                for rs in self.replicasets.get(m.group(1), [])
                if _selects(selector, rs["metadata"].get("labels", {}))
            ]
            return 200, {"kind": "ReplicaSetList", "apiVersion": "apps/v1", "items": items}
        return 404, status(404, f"no route {method} {path}")

    def _patch_deployment(
        self, ns: str, name: str, dep: dict[str, Any], body: Any, content_type: str
    ) -> tuple[int, dict[str, Any]]:
        if content_type != "application/json-patch+json":
            return 415, status(415, f"unsupported patch type {content_type}")
        if self.conflicts:
            self.conflicts -= 1
            if self.meddle:  # someone else's write
                self.meddle(dep)
            dep["metadata"]["resourceVersion"] = self.next_rv()
        new = copy.deepcopy(dep)  # applied to a copy: a refused patch changes nothing
        for op in body:
            if op["op"] != "replace":
                return 422, status(422, f"unsupported op {op['op']}")
            _pointer_set(new, op["path"], copy.deepcopy(op["value"]))
        if new["metadata"].get("resourceVersion") != dep["metadata"].get("resourceVersion"):
            return 409, status(
                409,
                f'Operation cannot be fulfilled on deployments.apps "{name}": the object has '
                "been modified; please apply your changes to the latest version and try again",
                "Conflict",
            )
        new["metadata"]["resourceVersion"] = self.next_rv()
        self.deployments[(ns, name)] = new
        self.applied.append(body)
        self._reconcile(ns, new)
        return 200, new

    def _reconcile(self, namespace: str, dep: dict[str, Any]) -> None:
        """The deployment controller's part: the matching ReplicaSet becomes the newest."""
        sets = self.replicasets.get(namespace, [])
        top = max((int(rs["metadata"]["annotations"][REVISION]) for rs in sets), default=0)
        for rs in sets:
            if _no_hash(rs["spec"]["template"]) == _no_hash(dep["spec"]["template"]):
                rs["metadata"]["annotations"][REVISION] = str(top + 1)
                dep["metadata"].setdefault("annotations", {})[REVISION] = str(top + 1)
        dep["metadata"]["generation"] = dep["metadata"].get("generation", 1) + 1


def template(image: str, hash_: str | None = None) -> dict[str, Any]:
    labels = {"app": "llm"}
    if hash_:
        labels["pod-template-hash"] = hash_
    return {
        "metadata": {"labels": labels},
        "spec": {
            "containers": [
                {"name": "server", "image": image, "resources": {"limits": {"nvidia.com/gpu": "1"}}}
            ]
        },
    }


def llm_fixture(
    kube: FakeKube,
    *,
    current: int = 3,
    paused: bool = False,
    current_image: str | None = None,
    opted_in: bool = True,
    namespace: str = "inference",
) -> None:
    """``namespace``/llm at revision ``current`` of three (images llm:v1..v3), opted in to
    rollbacks unless ``opted_in`` is false, plus a ReplicaSet of another owner with the
    same labels that must be ignored."""
    images = {1: "llm:v1", 2: "llm:v2", 3: "llm:v3"}
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "llm",
            "namespace": namespace,
            "uid": "dep-uid",
            "labels": {"app": "llm", **({"vigil.dev/rollback": "enabled"} if opted_in else {})},
            "generation": 5,
            "resourceVersion": kube.next_rv(),
            "annotations": {
                REVISION: str(current),
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
            },
        },
        "spec": {
            "replicas": 2,
            "paused": paused,
            "selector": {"matchLabels": {"app": "llm"}},
            "template": template(current_image or images[current]),
        },
    }
    kube.deployments[(namespace, "llm")] = dep
    owner = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "llm",
            "uid": "dep-uid",
            "controller": True,
        }
    ]
    sets = []
    for rev, image in images.items():
        sets.append(
            {
                "metadata": {
                    "name": f"llm-{rev}abc",
                    "namespace": namespace,
                    "labels": {"app": "llm", "pod-template-hash": f"{rev}abc"},
                    "annotations": {REVISION: str(rev), "team": f"owner-of-v{rev}"},
                    "ownerReferences": owner,
                },
                "spec": {"template": template(image, f"{rev}abc")},
            }
        )
    # First in the list, so an unfiltered pick of "the highest revision below 3" takes it.
    sets.insert(
        0,
        {
            "metadata": {
                "name": "stray-zzz",
                "namespace": namespace,
                "labels": {"app": "llm", "pod-template-hash": "zzz"},
                "annotations": {REVISION: "2"},
                "ownerReferences": [{**owner[0], "uid": "someone-else"}],
            },
            "spec": {"template": template("stray:latest", "zzz")},
        },
    )
    kube.replicasets[namespace] = sets


def deployment_config(tmp_path: Path, kube: FakeKube) -> Path:
    """A controller configuration whose one target rolls back the Deployment an alert names
    (labels namespace, deployment) through ``kube``, in namespace inference only."""
    cfg = tmp_path / "rollback.yaml"
    target = {
        "action": "kubernetes",
        "namespace": "{namespace}",
        "deployment": "{deployment}",
        "allowed_namespaces": ["inference"],
        "kubeconfig": str(kube.kubeconfig(tmp_path / "kc")),
    }
    policy = [{"match_re": {"deployment": ".+"}, "target": "k8s"}]
    cfg.write_text(json.dumps({"targets": {"k8s": target}, "policy": policy}))
    return cfg
