"""Pod names for pod UIDs: a watch on the pods of this node, through the Kubernetes API.

Measures nothing itself: discovery finds a pod UID and a container id in each watched
process's cgroup path, and asks :meth:`PodWatcher.lookup` for the pod's name, namespace
and container names, and :meth:`PodWatcher.owner` for the workload that owns the pod
(a Deployment is derived from its ReplicaSet, as ``kubectl`` shows it), which the
rollback alerts carry to name what to roll back.
Source: ``GET /api/v1/pods?fieldSelector=spec.nodeName=<node>``
(one list, then a watch from its resourceVersion; a new list when the watch expires with
410 Gone). Cost: one list per start or expiry and one long-lived HTTP stream; memory is a
few hundred bytes per pod on the node. Privilege: a service account allowed to get, list
and watch pods (deploy/agent-rbac.yaml), nothing more.

The API being down never stops the agent: the last map is kept, the cause is logged once
per interval, and the watcher retries with a capped backoff.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.config import Config, ConfigError
from agent.log import log_limited

log = logging.getLogger("vigil.kube")

# Container ids in pod status carry the runtime as a URI scheme; cgroup paths do not.
_RUNTIME_PREFIXES = ("containerd://", "cri-o://", "docker://", "cri-containerd://")
# The API server closes a watch after this many seconds (it picks 5-10 min by default);
# asking for less bounds how long a silently dead connection can go unnoticed.
WATCH_TIMEOUT_S = 240
# Reconnect delays after failures: fast enough to catch up after an API server restart,
# slow enough not to hammer an API server that is down (1, 2, 4 … 30 s).
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
# A watch that ends sooner than this without an error is treated like a failure's pause.
MIN_WATCH_S = 1.0
# In-cluster service account files and the variable that tells the agent runs in a pod.
IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"


@dataclass(frozen=True)
class PodEntry:
    uid: str
    name: str
    namespace: str
    containers: Mapping[str, str]  # container id (no runtime prefix) -> container name
    workload_kind: str = ""  # Deployment, StatefulSet, DaemonSet, Job, ReplicaSet … or ""
    workload: str = ""
    # Where the inference collector reaches the pod's servers, and the annotations that
    # name a server discovery cannot guess (agent/collectors/inference/targets.py).
    ip: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)


# The label the Deployment controller puts on a ReplicaSet's pods; the ReplicaSet is named
# "<deployment>-<hash>", so the Deployment's name is the ReplicaSet's minus "-<hash>".
POD_TEMPLATE_HASH = "pod-template-hash"


def owning_workload(owner_refs: Iterable[Any] | None, labels: Mapping[str, str]) -> tuple[str, str]:
    """(kind, name) of the workload that controls a pod: its controller owner reference,
    with a Deployment's ReplicaSet named as the Deployment; ("", "") for a bare pod.

    Derived from the pod alone (no ReplicaSet read), so the agent needs no RBAC beyond
    pods: a ReplicaSet whose name does not end in the pod's template hash is reported as
    the ReplicaSet itself rather than guessed at."""
    for ref in owner_refs or ():
        if not _get(ref, "controller", "controller"):
            continue
        kind = str(_get(ref, "kind", "kind") or "")
        name = str(_get(ref, "name", "name") or "")
        template_hash = labels.get(POD_TEMPLATE_HASH, "")
        if kind == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
            return "Deployment", name[: -len(template_hash) - 1]
        return kind, name
    return "", ""


def strip_container_id(raw: str) -> str:
    """``"containerd://3f…"`` → ``"3f…"``; an id without a known scheme is kept as is."""
    for prefix in _RUNTIME_PREFIXES:
        if raw.startswith(prefix):
            return raw[len(prefix) :]
    scheme, sep, rest = raw.partition("://")
    return rest if sep and scheme.isidentifier() else raw


def _get(obj: Any, attr: str, key: str) -> Any:
    """Reads a field from a client model (snake_case attribute) or a raw dict (camelCase)."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, attr, None)


def pod_entry(pod: Any) -> PodEntry | None:
    """A pod (client model or raw JSON dict) → its entry; None when it has no UID."""
    meta = _get(pod, "metadata", "metadata")
    uid = _get(meta, "uid", "uid")
    if not uid:
        return None
    status = _get(pod, "status", "status")
    containers: dict[str, str] = {}
    for attr, key in (
        ("init_container_statuses", "initContainerStatuses"),
        ("container_statuses", "containerStatuses"),
        ("ephemeral_container_statuses", "ephemeralContainerStatuses"),
    ):
        for cs in _get(status, attr, key) or ():
            cid = _get(cs, "container_id", "containerID")
            name = _get(cs, "name", "name")
            if cid and name:
                containers[strip_container_id(str(cid))] = str(name)
    labels = _get(meta, "labels", "labels") or {}
    kind, workload = owning_workload(
        _get(meta, "owner_references", "ownerReferences"),
        {str(k): str(v) for k, v in labels.items()},
    )
    return PodEntry(
        uid=str(uid),
        name=str(_get(meta, "name", "name") or ""),
        namespace=str(_get(meta, "namespace", "namespace") or ""),
        containers=containers,
        workload_kind=kind,
        workload=workload,
        ip=str(_get(status, "pod_ip", "podIP") or ""),
        annotations={
            str(k): str(v) for k, v in (_get(meta, "annotations", "annotations") or {}).items()
        },
    )


def apply_event(pods: dict[str, PodEntry], kind: str, pod: Any) -> None:
    """Applies one watch event to ``pods`` (uid → entry); BOOKMARK and others are no-ops."""
    entry = pod_entry(pod)
    if entry is None:
        return
    if kind in ("ADDED", "MODIFIED"):
        pods[entry.uid] = entry
    elif kind == "DELETED":
        pods.pop(entry.uid, None)


class PodWatcher:
    """Keeps uid → pod for one node's pods; implements discovery's ``PodResolver``."""

    def __init__(
        self,
        api: Any,  # kubernetes.client.CoreV1Api (or anything with list_pod_for_all_namespaces)
        node_name: str,
        *,
        watch_timeout: int = WATCH_TIMEOUT_S,
        backoff: tuple[float, float] = (BACKOFF_FIRST_S, BACKOFF_MAX_S),
        watch_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.api = api
        self.node_name = node_name
        self.field_selector = f"spec.nodeName={node_name}"
        self.watch_timeout = watch_timeout
        self.backoff_first, self.backoff_max = backoff
        self._stop = threading.Event()
        self._watch_factory = watch_factory or _default_watch
        self._pods: dict[str, PodEntry] = {}
        self._lock = threading.Lock()
        self._listed = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: Any = None
        self.lists = 0  # full lists done (the first, then one per expiry or failure)
        self.errors = 0

    # -- PodResolver --------------------------------------------------------------------
    def lookup(self, pod_uid: str) -> tuple[str, str, Mapping[str, str]] | None:
        with self._lock:
            entry = self._pods.get(pod_uid)
        if entry is None:
            return None
        return entry.name, entry.namespace, entry.containers

    def owner(self, pod_uid: str) -> tuple[str, str]:
        """(kind, name) of the workload that owns the pod; ("", "") when unknown."""
        with self._lock:
            entry = self._pods.get(pod_uid)
        return (entry.workload_kind, entry.workload) if entry else ("", "")

    def pods(self) -> dict[str, PodEntry]:
        with self._lock:
            return dict(self._pods)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vigil-kube", daemon=True)
        self._thread.start()

    def wait_listed(self, timeout: float) -> bool:
        """True once the first list has arrived (for tests and start-up ordering)."""
        return self._listed.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        watch = self._watch
        if watch is not None:
            watch.stop()
        if self._thread is not None:
            # The stream ends at the next event or when its read times out; the thread is
            # a daemon, so a quiet stream never holds up the agent's exit.
            self._thread.join(timeout=1.0)

    # -- the work -----------------------------------------------------------------------
    def _list(self) -> str:
        result = self.api.list_pod_for_all_namespaces(
            field_selector=self.field_selector, _request_timeout=30
        )
        pods: dict[str, PodEntry] = {}
        for pod in result.items or ():
            entry = pod_entry(pod)
            if entry is not None:
                pods[entry.uid] = entry
        with self._lock:
            self._pods = pods
        self.lists += 1
        self._listed.set()
        log.info("pods listed", extra={"node": self.node_name, "pods": len(pods)})
        return str(result.metadata.resource_version or "")

    def _watch_from(self, resource_version: str) -> str:
        """Streams events until the server ends the watch; returns the last resourceVersion."""
        watch = self._watch_factory()
        self._watch = watch
        stream: Iterable[dict[str, Any]] = watch.stream(
            self.api.list_pod_for_all_namespaces,
            field_selector=self.field_selector,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout,
            # A read timeout past the server's own: a connection that went silent is dropped.
            _request_timeout=(10, self.watch_timeout + 30),
        )
        for event in stream:
            if self._stop.is_set():
                break
            with self._lock:
                pods = dict(self._pods)
                apply_event(pods, str(event.get("type", "")), event.get("object"))
                self._pods = pods
        return str(watch.resource_version or resource_version)

    def _run(self) -> None:
        from kubernetes.client.exceptions import ApiException  # heavy import, only here

        backoff = self.backoff_first
        resource_version = ""
        listed_at = 0.0
        while not self._stop.is_set():
            try:
                if not resource_version:
                    resource_version = self._list()
                    listed_at = time.monotonic()
                began = time.monotonic()
                resource_version = self._watch_from(resource_version)
                backoff = self.backoff_first
                # A server that ends every watch at once would otherwise make this a busy
                # loop; a healthy watch lasts minutes, so the pause costs nothing then.
                if time.monotonic() - began < MIN_WATCH_S and self._stop.wait(backoff):
                    return
                continue
            except ApiException as exc:
                if exc.status == 410:
                    # The watch's resourceVersion is too old: list again, at once unless the
                    # list it came from is itself only just made (then something is off).
                    log.info("pod watch expired; listing again", extra={"node": self.node_name})
                    resource_version = ""
                    if time.monotonic() - listed_at > MIN_WATCH_S:
                        continue
                else:
                    self._failed(f"HTTP {exc.status} {exc.reason}")
                    resource_version = ""
            except Exception as exc:  # API down, DNS, TLS, a bad payload: keep the last map
                self._failed(f"{type(exc).__name__}: {exc}")
                resource_version = ""
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, self.backoff_max)

    def _failed(self, error: str) -> None:
        self.errors += 1
        log_limited(
            log,
            logging.WARNING,
            "kube-api",
            "Kubernetes API unreachable; keeping the last pod names",
            every=300.0,
            node=self.node_name,
            error=error[:300],
            pods=len(self._pods),
        )


def _default_watch() -> Any:
    from kubernetes import watch

    return watch.Watch()


def from_config(config: Config, environ: Mapping[str, str] | None = None) -> PodWatcher | None:
    """A started-later watcher per ``kubernetes.*`` settings, or None when it is off.

    ``auto`` turns it on inside a cluster (``KUBERNETES_SERVICE_HOST`` set) or when a
    kubeconfig is given. ``on`` makes a missing node name or unusable credentials an error
    at start; ``auto`` logs them once and runs without pod names.
    """
    env = os.environ if environ is None else environ
    mode = str(config.get("kubernetes.mode"))
    kubeconfig = str(config.get("kubernetes.kubeconfig") or "")
    node = str(config.get("kubernetes.node-name") or "")
    if mode == "off":
        return None
    if mode == "auto" and not kubeconfig and not env.get(IN_CLUSTER_ENV):
        return None

    def unusable(why: str) -> None:
        if mode == "on":
            raise ConfigError(f"kubernetes.mode=on: {why}")
        log.warning("pod names disabled", extra={"reason": why})

    if not node:
        unusable(
            "kubernetes.node-name is empty; set it (VIGIL_KUBERNETES_NODE_NAME, from the "
            "downward API's spec.nodeName in a DaemonSet) so that only this node's pods are watched"
        )
        return None
    try:
        api = core_api(kubeconfig)
    except Exception as exc:  # the config loaders raise several unrelated types
        where = kubeconfig or "the in-cluster service account"
        unusable(f"cannot load Kubernetes credentials from {where}: {exc}")
        return None
    return PodWatcher(api, node)


def core_api(kubeconfig: str) -> Any:
    from kubernetes import client
    from kubernetes import config as kconfig

    if kubeconfig:
        api_client = kconfig.new_client_from_config(config_file=kubeconfig)
    else:
        cfg = client.Configuration()
        kconfig.load_incluster_config(client_configuration=cfg)
        api_client = client.ApiClient(cfg)
    return client.CoreV1Api(api_client)


def start_resolver(config: Config, wait: float = 5.0) -> PodWatcher | None:
    """:func:`from_config`, started, having waited up to ``wait`` s for the first list so
    that the processes discovery sees first already get their pod names."""
    watcher = from_config(config)
    if watcher is not None:
        watcher.start()
        if not watcher.wait_listed(wait):
            log.warning(
                "first pod list not there yet; pod names follow when it arrives",
                extra={"node": watcher.node_name, "waited_s": wait},
            )
    return watcher


__all__ = [
    "PodEntry",
    "PodWatcher",
    "apply_event",
    "from_config",
    "owning_workload",
    "pod_entry",
    "start_resolver",
    "strip_container_id",
]
