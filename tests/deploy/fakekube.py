"""A local Kubernetes API server that serves pods: list and watch, over plain HTTP on loopback.

It speaks the wire protocol the official client uses: ``GET /api/v1/pods`` with a
``fieldSelector`` answers a ``PodList``; with ``watch=true`` it answers a chunked stream of
JSON lines (``{"type": "ADDED", "object": {...}}``) fed from :meth:`FakeKubeAPI.emit`.
A test drives it: add/modify/delete pods, expire a watch with 410 Gone, or go down.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from kubeapi import FakeKubeServer, read_json, reply_json, status

_CLOSE = object()
LEASES = "/apis/coordination.k8s.io/v1/namespaces/"


def make_pod(
    name: str,
    namespace: str,
    uid: str,
    node: str,
    containers: dict[str, str] | None = None,
    runtime: str = "containerd",
) -> dict[str, Any]:
    """A pod as the API serves it; ``containers`` maps container name -> bare container id."""
    statuses = [
        {
            "name": cname,
            "containerID": f"{runtime}://{cid}",
            "image": f"registry.local/{cname}:1",
            "imageID": f"registry.local/{cname}@sha256:{'0' * 64}",
            "ready": True,
            "restartCount": 0,
            "started": True,
            "state": {"running": {"startedAt": "2026-11-23T12:00:00Z"}},
        }
        for cname, cid in (containers or {}).items()
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "resourceVersion": "1"},
        "spec": {"nodeName": node, "containers": [{"name": c} for c in (containers or {})]},
        "status": {"phase": "Running", "containerStatuses": statuses},
    }


class FakeKubeAPI(FakeKubeServer):
    methods = ("GET", "POST", "PUT")
    protocol_version = "HTTP/1.1"
    daemon_threads = True

    def __init__(self) -> None:
        self.pods: dict[str, dict[str, Any]] = {}  # uid -> pod
        self.resource_version = 100
        self.list_calls = 0
        self.watch_calls = 0
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self.authorization: set[str] = set()  # Authorization headers seen
        self.down = False  # answer 503 to everything
        # Watches asking for a resourceVersion below this get 410 Gone (history compacted).
        self.gone_below = 0
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}  # (namespace, name) -> Lease
        self._watchers: list[queue.Queue[Any]] = []
        # Every event with its resourceVersion: a watch from version N is first sent the
        # events after N, as the API server does, so none is lost between list and watch.
        self.history: list[tuple[int, dict[str, Any]]] = []
        self._lock = threading.Lock()
        super().__init__()

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        if method == "GET":
            self._handle(h)
        else:
            self._lease_write(h, method)

    def __exit__(self, *exc: object) -> None:
        # A watch waits on its queue; close them so shutdown need not wait them out.
        self.close_watches()
        super().__exit__(*exc)

    # -- what a test does ---------------------------------------------------------------
    def _bump(self, pod: dict[str, Any]) -> dict[str, Any]:
        self.resource_version += 1
        pod = json.loads(json.dumps(pod))
        pod["metadata"]["resourceVersion"] = str(self.resource_version)
        return pod

    def put(self, pod: dict[str, Any]) -> None:
        """Adds or updates a pod, telling open watches (ADDED or MODIFIED)."""
        with self._lock:
            uid = pod["metadata"]["uid"]
            kind = "MODIFIED" if uid in self.pods else "ADDED"
            pod = self._bump(pod)
            self.pods[uid] = pod
            self._broadcast({"type": kind, "object": pod})

    def delete(self, uid: str) -> None:
        with self._lock:
            pod = self._bump(self.pods.pop(uid))
            self._broadcast({"type": "DELETED", "object": pod})

    def expire_watches(self) -> None:
        """What an API server does when a watch's resourceVersion is compacted away."""
        with self._lock:
            self._broadcast(
                {"type": "ERROR", "object": status(410, "too old resource version", "Expired")}
            )

    def close_watches(self) -> None:
        with self._lock:
            for q in self._watchers:
                q.put(_CLOSE)

    def wait_for(self, what: str, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while getattr(self, what) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} stayed at {getattr(self, what)} < {count}")
            time.sleep(0.02)

    def _broadcast(self, event: dict[str, Any]) -> None:
        if event["type"] != "ERROR":
            self.history.append((self.resource_version, event))
        for q in self._watchers:
            q.put(event)

    # -- the server side ----------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlparse(h.path)
        query = parse_qs(url.query)
        self.requests.append((url.path, query))
        self.authorization.add(h.headers.get("Authorization", ""))
        if self.down:
            reply_json(h, 503, status(503, "down for a test"))
            return
        if url.path.startswith(LEASES):
            self._lease_read(h, url.path)
            return
        if url.path != "/api/v1/pods":
            reply_json(h, 404, status(404, "not found"))
            return
        node = ""
        for sel in query.get("fieldSelector", [""])[0].split(","):
            if sel.startswith("spec.nodeName="):
                node = sel.split("=", 1)[1]
        if query.get("watch", [""])[0] in ("1", "true"):
            if int(query.get("resourceVersion", ["0"])[0] or 0) < self.gone_below:
                reply_json(h, 410, status(410, reason="Expired"))
                return
            self._watch(h, node, float(query.get("timeoutSeconds", ["60"])[0]))
            return
        with self._lock:
            self.list_calls += 1
            items = [p for p in self.pods.values() if not node or p["spec"]["nodeName"] == node]
            body = {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self.resource_version)},
                "items": items,
            }
        reply_json(h, 200, body)

    def _watch(self, h: BaseHTTPRequestHandler, node: str, timeout: float) -> None:
        q: queue.Queue[Any] = queue.Queue()
        since = int(parse_qs(urlparse(h.path).query).get("resourceVersion", ["0"])[0] or 0)
        with self._lock:
            self.watch_calls += 1
            for rv, event in self.history:
                if rv > since:
                    q.put(event)
            self._watchers.append(q)
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                try:
                    event = q.get(timeout=0.1)
                except queue.Empty:
                    continue
                if event is _CLOSE:
                    break
                obj = event["object"]
                if node and obj.get("spec", {}).get("nodeName", node) != node:
                    continue
                line = (json.dumps(event) + "\n").encode()
                h.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                h.wfile.flush()
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with self._lock:
                self._watchers.remove(q)

    # -- leases (GET, POST, PUT with optimistic concurrency, as the API server) ----------
    def _lease_key(self, path: str) -> tuple[str, str]:
        parts = path[len(LEASES) :].split("/")  # <ns>/leases[/<name>]
        return parts[0], parts[2] if len(parts) > 2 else ""

    def _lease_read(self, h: BaseHTTPRequestHandler, path: str) -> None:
        with self._lock:
            lease = self.leases.get(self._lease_key(path))
        if lease is None:
            reply_json(h, 404, status(404, reason="NotFound"))
        else:
            reply_json(h, 200, lease)

    def _lease_write(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = urlparse(h.path).path
        body = read_json(h)
        if self.down:
            reply_json(h, 503, status(503, "down for a test"))
            return
        ns, name = self._lease_key(path)
        name = name or body["metadata"]["name"]
        with self._lock:
            current = self.leases.get((ns, name))
            if method == "POST" and current is not None:
                reply_json(h, 409, status(409, reason="AlreadyExists"))
                return
            if method == "PUT":
                if current is None:
                    reply_json(h, 404, status(404, reason="NotFound"))
                    return
                if (
                    body["metadata"].get("resourceVersion")
                    != current["metadata"]["resourceVersion"]
                ):
                    reply_json(h, 409, status(409, reason="Conflict"))
                    return
            self.resource_version += 1
            body["metadata"]["resourceVersion"] = str(self.resource_version)
            body["metadata"]["namespace"] = ns
            self.leases[(ns, name)] = body
        reply_json(h, 201 if method == "POST" else 200, body)
