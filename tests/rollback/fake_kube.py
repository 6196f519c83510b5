"""A local fake of the few Kubernetes API endpoints a Deployment rollback uses.

Serves, over real HTTP for the official ``kubernetes`` client:

  GET   /apis/apps/v1/namespaces/{ns}/deployments/{name}
  PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}   (application/json-patch+json)
  GET   /apis/apps/v1/namespaces/{ns}/replicasets?labelSelector=k=v,...

and does what the deployment controller does after a template change: the ReplicaSet
whose template matches becomes the newest revision, and so does the Deployment. Requests
without the expected bearer token get 401. Every request is recorded for assertions.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

REVISION = "deployment.kubernetes.io/revision"
_DEPLOYMENT = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments/([^/]+)$")
_REPLICASETS = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/replicasets$")


def _status(code: int, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "code": code,
    }


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


class FakeKube:
    def __init__(self, token: str = "kube-token") -> None:
        self.token = token
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.replicasets: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, code: int, doc: dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self, method: str) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                with fake.lock:
                    fake.requests.append((method, self.path, body))
                    if self.headers.get("Authorization") != f"Bearer {fake.token}":
                        self._reply(401, _status(401, "Unauthorized"))
                        return
                    code, doc = fake.route(
                        method,
                        url.path,
                        parse_qs(url.query),
                        body,
                        self.headers.get("Content-Type", ""),
                    )
                self._reply(code, doc)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeKube:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "vigil", "user": {"token": self.token}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "vigil"}}],
                }
            )
        )
        return path

    def patches(self) -> list[Any]:
        return [body for method, _, body in self.requests if method == "PATCH"]

    def route(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, content_type: str
    ) -> tuple[int, dict[str, Any]]:
        m = _DEPLOYMENT.match(path)
        if m:
            dep = self.deployments.get((m.group(1), m.group(2)))
            if dep is None:
                return 404, _status(404, f'deployments.apps "{m.group(2)}" not found')
            if method == "GET":
                return 200, dep
            if method == "PATCH":
                if content_type != "application/json-patch+json":
                    return 415, _status(415, f"unsupported patch type {content_type}")
                for op in body:
                    if op["op"] != "replace":
                        return 422, _status(422, f"unsupported op {op['op']}")
                    _pointer_set(dep, op["path"], copy.deepcopy(op["value"]))
                self._reconcile(m.group(1), dep)
                return 200, dep
        m = _REPLICASETS.match(path)
        if m and method == "GET":
            selector = query.get("labelSelector", [""])[0]
            items = [
                rs
                for rs in self.replicasets.get(m.group(1), [])
                if _selects(selector, rs["metadata"].get("labels", {}))
            ]
            return 200, {"kind": "ReplicaSetList", "apiVersion": "apps/v1", "items": items}
        return 404, _status(404, f"no route {method} {path}")

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
    kube: FakeKube, *, current: int = 3, paused: bool = False, current_image: str | None = None
) -> None:
    """inference/llm at revision ``current`` of three (images llm:v1..v3), plus a
    ReplicaSet of another owner with the same labels that must be ignored."""
    images = {1: "llm:v1", 2: "llm:v2", 3: "llm:v3"}
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "llm",
            "namespace": "inference",
            "uid": "dep-uid",
            "generation": 5,
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
    kube.deployments[("inference", "llm")] = dep
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
                    "namespace": "inference",
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
                "namespace": "inference",
                "labels": {"app": "llm", "pod-template-hash": "zzz"},
                "annotations": {REVISION: "2"},
                "ownerReferences": [{**owner[0], "uid": "someone-else"}],
            },
            "spec": {"template": template("stray:latest", "zzz")},
        },
    )
    kube.replicasets["inference"] = sets
