"""The watched-process set and its pod/container attribution.

Measures: which processes Vigil watches. Source: ``<procfs>/<pid>/{cmdline,comm,stat,cgroup}``
(read once per process; the cgroup and start time are cached by ``(pid, start time)`` so a
reused pid is never mistaken for its predecessor), plus pids that other components add
(the GPU collector adds every pid holding a GPU), plus Python processes that have an ML
runtime (torch, onnxruntime, TensorFlow, JAX, scikit-learn, XGBoost, LightGBM) mapped, seen in
``<procfs>/<pid>/maps``. Cost: one directory listing and one ``cmdline`` read per process per
refresh (default every 5 s); ``maps`` only for Python processes, until a runtime shows up or
:data:`MAPS_READS` refreshes have passed, then never again for that process. Privilege: none to read
other users' ``cmdline``; root to see every ``cgroup`` file under hidepid.

It is the one source of truth: the other collectors ask it, never /proc directly.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from prometheus_client.core import Metric

from agent.log import log_limited
from agent.loop import Loop
from agent.metrics import MetricSpec

log = logging.getLogger("vigil.discovery")


# --- cgroup parsing (pure) ------------------------------------------------------------


@dataclass(frozen=True)
class CgroupIdentity:
    pod_uid: str = ""
    container_id: str = ""
    runtime: str = ""  # docker | containerd | cri-o | podman | "" when unknown
    # True when the path looks like a Kubernetes pod's but could not be fully parsed.
    unknown_shape: bool = False


# Pod UIDs are RFC 4122 UUIDs; the systemd driver writes them with '_' for '-'. Static
# (mirror) pods use a 32-hex-digit config hash instead.
_POD = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})"
    r"(?:\.slice)?(?=/|$)"
)
# Last path element naming a container: "<runtime prefix>-<64 hex>.scope" (systemd driver)
# or a bare 64-hex id (cgroupfs driver), optionally followed by a nested "/container" etc.
_CONTAINER = re.compile(
    r"(?:^|/)(?P<prefix>docker-|cri-containerd-|crio-|libpod-|containerd-)?"
    r"(?P<id>[0-9a-f]{64})(?:\.scope)?(?=/|$)"
)
_RUNTIME = {
    "docker-": "docker",
    "cri-containerd-": "containerd",
    "containerd-": "containerd",
    "crio-": "cri-o",
    "libpod-": "podman",
}


def parse_cgroup(text: str) -> CgroupIdentity:
    """``/proc/<pid>/cgroup`` contents → pod UID and container id (either may be empty).

    Handles cgroup v1 (``N:controllers:/path``, one line per hierarchy) and v2
    (``0::/path``), the systemd and cgroupfs drivers, and docker / containerd / CRI-O /
    podman id forms. CRI-O's ``crio-conmon-<id>`` monitor is not a container.
    """
    paths: list[str] = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier, controllers, path = parts
        # v2's unified line first: it is the one the kernel keeps on v2 and hybrid hosts.
        if hier == "0" and controllers == "":
            paths.insert(0, path)
        else:
            paths.append(path)
    for path in paths:
        identity = _parse_path(path)
        if identity.pod_uid or identity.container_id:
            return identity
    looks_kube = any("kubepods" in p for p in paths)
    return CgroupIdentity(unknown_shape=looks_kube)


def _parse_path(path: str) -> CgroupIdentity:
    pod_uid = ""
    m = _POD.search(path)
    if m:
        raw = m.group(1)
        pod_uid = raw.replace("_", "-") if len(raw) == 36 else raw
    container_id = runtime = ""
    for cm in _CONTAINER.finditer(path):
        # The innermost match is the container; earlier ones would be parents.
        container_id = cm.group("id")
        runtime = _RUNTIME.get(cm.group("prefix") or "", "")
    if "crio-conmon-" in path and not container_id:
        return CgroupIdentity(pod_uid=pod_uid, runtime="cri-o")
    if not runtime and container_id:
        if "/docker/" in path or path.startswith("/docker"):
            runtime = "docker"
        elif "crio" in path:
            runtime = "cri-o"
    return CgroupIdentity(pod_uid=pod_uid, container_id=container_id, runtime=runtime)


def parse_stat_start_time(text: str) -> int:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks since boot).

    ``comm`` (field 2) may hold spaces and parentheses, so fields are counted from the
    last ``)``.
    """
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); field 22 is rest[19].
    return int(rest[19])


# --- ML runtimes in a process's mapped files (pure) ----------------------------------

# A file path in /proc/<pid>/maps that only a process using that runtime maps: the
# runtime's compiled extension modules or its shared library. Importing the package maps
# them, whatever the command line says (`python serve.py` importing sklearn).
_RUNTIME_FILES = (
    ("torch", re.compile(rb"/(?:torch/lib/|libtorch[_a-z]*\.so)")),
    ("onnxruntime", re.compile(rb"/(?:onnxruntime/capi/|libonnxruntime[^/]*\.so)")),
    ("tensorflow", re.compile(rb"/(?:tensorflow/|libtensorflow[^/]*\.so)")),
    ("jax", re.compile(rb"/jaxlib/")),
    ("scikit-learn", re.compile(rb"/sklearn/[^\n]*\.so")),
    ("xgboost", re.compile(rb"/(?:xgboost/lib/|libxgboost\.so)")),
    ("lightgbm", re.compile(rb"/(?:lightgbm/|lib_lightgbm\.so)")),
)
RUNTIMES = tuple(name for name, _ in _RUNTIME_FILES)


def runtimes_in_maps(text: bytes) -> tuple[str, ...]:
    """``/proc/<pid>/maps`` contents → the ML runtimes it has mapped, in :data:`RUNTIMES` order."""
    return tuple(name for name, rx in _RUNTIME_FILES if rx.search(text))


_PYTHON_ARGV0 = re.compile(r"(?:^|/)python[0-9.]*(?:-dbg)?$")


def is_python(cmdline: str) -> bool:
    """Whether the command line's program is a Python interpreter (``python3``,
    ``/usr/bin/python3.11``)."""
    argv0 = cmdline.split(" ", 1)[0]
    return bool(_PYTHON_ARGV0.search(argv0))


def suggest_watch(cmdline: str) -> str:
    """A ``--watch`` regex that matches this Python command line and few others: the script
    (``python.*serve\\.py``) or the module (``python.*-m uvicorn``) it runs."""
    args = cmdline.split(" ")[1:]
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-m", "-c") and i + 1 < len(args):
            return f"python.*{arg} " + re.escape(args[i + 1].split(";")[0][:40])
        if arg[:2] in ("-m", "-c") and len(arg) > 2:
            return "python.*" + arg[:2] + re.escape(arg[2:])
        if arg in ("-W", "-X"):  # options whose value is the next argument
            i += 2
            continue
        if arg.startswith("-") or not arg:
            i += 1
            continue
        return "python.*" + re.escape(arg.rsplit("/", 1)[-1])
    return "^" + re.escape(cmdline.split(" ", 1)[0]) + "$"


# How often maps is read for a Python process with no runtime mapped yet: a server imports
# its framework within seconds of starting, so after this many refreshes it is settled.
MAPS_READS = 6
# Python processes whose maps verdict is remembered at once (each entry is ~200 bytes).
MAPS_CACHE_MAX = 8192
# Seconds between two "watching process" (or "no longer watching") lines for one pid.
LOG_EVERY = 60.0


# --- the watched set ------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    comm: str
    cmdline: str
    start_time: int
    pod_uid: str = ""
    container_id: str = ""
    pod: str = ""  # pod name when the Kubernetes API resolved it
    namespace: str = ""
    container: str = ""  # container name when resolved
    sources: frozenset[str] = field(default_factory=frozenset)
    # The workload that owns the pod (Deployment, StatefulSet …), when the API resolved
    # it: only on vigil_watched_process_info, which rules join to name a rollback target.
    workload_kind: str = ""
    workload: str = ""

    @property
    def pod_label(self) -> str:
        """Pod name, or the pod UID when no API resolved it (still unique per pod)."""
        return self.pod or self.pod_uid

    @property
    def container_label(self) -> str:
        return self.container or self.container_id[:12]

    def labels(self) -> dict[str, str]:
        """The labels every per-process series carries (see the metric contract).

        ``pid`` is present only where no pod is known: inside a pod the pod/container/comm
        triple is stable across restarts, a pid is not.
        """
        out = {
            "pod": self.pod_label,
            "namespace": self.namespace,
            "container": self.container_label,
            "comm": self.comm,
        }
        if not self.pod_label:
            out["pid"] = str(self.pid)
        return out


LABEL_NAMES = ("pod", "namespace", "container", "comm", "pid")


def series_labels(info: ProcessInfo | None, pid: int, comm: str = "") -> tuple[str, ...]:
    """Values for :data:`LABEL_NAMES`, with ``pid`` empty when a pod is known."""
    if info is None:
        return ("", "", "", comm, str(pid))
    lab = info.labels()
    return (lab["pod"], lab["namespace"], lab["container"], lab["comm"], lab.get("pid", ""))


WATCHED_PROCESS_INFO = MetricSpec(
    "vigil_watched_process_info",
    "gauge",
    "A process Vigil watches, with its pod attribution and the workload that owns the pod "
    "(value is always 1). workload_kind/workload name the pod's controller (a Deployment "
    "derived from its ReplicaSet), empty for a bare pod or without the Kubernetes API; the "
    "rollback alerts join on them.",
    "discovery",
    (
        "pid",
        "comm",
        "pod",
        "namespace",
        "container",
        "pod_uid",
        "container_id",
        "source",
        "workload_kind",
        "workload",
    ),
)
SKIPPED_PROCESSES = MetricSpec(
    "vigil_discovery_skipped_processes_total",
    "counter",
    "Processes discovery could not fully read, by reason (permission, unreadable, "
    "unknown_cgroup, maps_cache_full).",
    "discovery",
    ("reason",),
)
WATCHED_PROCESSES = MetricSpec(
    "vigil_discovery_watched_processes",
    "gauge",
    "Processes watched, by why: watch (command line matches a --watch pattern), runtime "
    "(a Python process with an ML runtime mapped), gpu (holds a GPU). A process watched "
    "for several reasons counts under each.",
    "discovery",
    ("reason",),
)
METRICS = (WATCHED_PROCESS_INFO, SKIPPED_PROCESSES, WATCHED_PROCESSES)
SKIP_REASONS = ("permission", "unreadable", "unknown_cgroup", "maps_cache_full")
WATCH_REASONS = ("watch", "runtime", "gpu")


@dataclass(frozen=True)
class Seen:
    """A Python process discovery saw, and why it is (not) watched (for `vigil doctor`)."""

    pid: int
    cmdline: str
    sources: frozenset[str]
    runtimes: tuple[str, ...]


class PodResolver(Protocol):
    """Maps a pod UID to (pod name, namespace, {container id: container name})."""

    def lookup(self, pod_uid: str) -> tuple[str, str, Mapping[str, str]] | None: ...


class Discovery:
    """Keeps the watched set fresh in a background thread; readers get an immutable dict."""

    def __init__(
        self,
        procfs: str = "/proc",
        patterns: Iterable[str] = (),
        interval: float = 5.0,
        resolver: PodResolver | None = None,
        self_pid: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        runtimes: bool = False,
    ) -> None:
        self.procfs = procfs
        self.patterns = [re.compile(p) for p in patterns]
        # Whether a Python process with an ML runtime mapped is watched whatever its command
        # line (the default); with patterns the user chose, only they decide.
        self.runtimes = runtimes
        self.interval = interval
        self.resolver = resolver
        self._self_pid = os.getpid() if self_pid is None else self_pid
        self._clock = clock
        self._extra: dict[str, frozenset[int]] = {}
        self._cache: dict[tuple[int, int], ProcessInfo] = {}
        self._watched: dict[int, ProcessInfo] = {}
        self._skipped: dict[str, int] = {}
        # pid → (cmdline, maps reads so far, runtimes found): maps is read for a Python
        # process until a runtime shows up or MAPS_READS passed; a new cmdline (a reused
        # pid, or exec) starts over.
        self._maps: dict[int, tuple[str, int, tuple[str, ...]]] = {}
        self.python_seen: tuple[Seen, ...] = ()
        self._lock = threading.Lock()
        # The first refresh runs in start(), so the thread waits one interval first; a bug
        # in a refresh is logged and counted, and must not stop discovery for good.
        self._loop = Loop(
            "discovery",
            self.refresh,
            interval,
            logger=log,
            message="discovery refresh failed",
            wait_first=True,
        )
        self.generation = 0
        self.labels_changed = False

    # -- what other components use ------------------------------------------------------
    def snapshot(self) -> Mapping[int, ProcessInfo]:
        return self._watched

    def get(self, pid: int) -> ProcessInfo | None:
        return self._watched.get(pid)

    def set_extra(self, source: str, pids: Iterable[int]) -> None:
        """Replaces the pids that ``source`` (e.g. "gpu") wants watched."""
        with self._lock:
            self._extra[source] = frozenset(pids)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self.refresh()
        self._loop.start()

    def close(self) -> None:
        self._loop.stop(timeout=2.0)

    # -- the work -----------------------------------------------------------------------
    def _skip(self, reason: str) -> None:
        self._skipped[reason] = self._skipped.get(reason, 0) + 1

    def _read(self, pid: int, name: str) -> bytes:
        with open(f"{self.procfs}/{pid}/{name}", "rb") as f:
            return f.read()

    def refresh(self) -> None:
        with self._lock:
            extra: dict[int, set[str]] = {}
            for source, pids in self._extra.items():
                for pid in pids:
                    extra.setdefault(pid, set()).add(source)
        try:
            entries = os.listdir(self.procfs)
        except OSError as exc:
            log.error("cannot list procfs", extra={"procfs": self.procfs, "error": exc.strerror})
            return
        watched: dict[int, ProcessInfo] = {}
        pythons: list[Seen] = []
        maps: dict[int, tuple[str, int, tuple[str, ...]]] = {}
        for entry in entries:
            if not entry.isdigit():
                continue
            pid = int(entry)
            if pid == self._self_pid:
                continue
            sources = set(extra.get(pid, ()))
            try:
                raw = self._read(pid, "cmdline")
            except FileNotFoundError:
                continue  # exited between listdir and open: not worth counting
            except PermissionError:
                self._skip("permission")
                continue
            except OSError:
                self._skip("unreadable")
                continue
            cmdline = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
            if cmdline and any(p.search(cmdline) for p in self.patterns):
                sources.add("watch")
            if is_python(cmdline):
                runtimes = self._runtimes(pid, cmdline, maps) if self.runtimes else ()
                if runtimes:
                    sources.add("runtime")
                pythons.append(Seen(pid, cmdline, frozenset(sources), runtimes))
            if not sources:
                continue
            info = self._describe(pid, cmdline, frozenset(sources))
            if info is not None:
                watched[pid] = info
        # Forget cached identities of processes that are gone.
        live = {(i.pid, i.start_time) for i in watched.values()}
        self._cache = {k: v for k, v in self._cache.items() if k in live}
        self._maps = maps  # only processes seen this time: exited ones are forgotten
        self.python_seen = tuple(pythons)
        self._log_changes(self._watched, watched)
        if watched.keys() != self._watched.keys() or self.labels_changed:
            # Readers that cache per-pid labels (sched) re-read them on a new generation.
            self.generation += 1
            self.labels_changed = False
        self._watched = watched

    def _runtimes(
        self, pid: int, cmdline: str, out: dict[int, tuple[str, int, tuple[str, ...]]]
    ) -> tuple[str, ...]:
        prev = self._maps.get(pid)
        if prev is not None and prev[0] == cmdline:
            _, reads, found = prev
            if found or reads >= MAPS_READS:
                out[pid] = prev
                return found
        else:
            reads, found = 0, ()
        if len(out) >= MAPS_CACHE_MAX:
            self._skip("maps_cache_full")
            return ()
        try:
            found = runtimes_in_maps(self._read(pid, "maps"))
        except FileNotFoundError:
            return ()
        except OSError:
            # Not readable (another user's process without root): counted once, then left.
            self._skip("unreadable")
            out[pid] = (cmdline, MAPS_READS, ())
            return ()
        out[pid] = (cmdline, reads + 1, found)
        return found

    def _log_changes(self, old: Mapping[int, ProcessInfo], new: Mapping[int, ProcessInfo]) -> None:
        """One line per process added or dropped. Keyed per pid (so the limiter's memory is
        bounded by pid_max): a process that comes and goes on every refresh logs once a
        minute, not every 5 s."""
        for pid in sorted(new.keys() - old.keys()):
            p = new[pid]
            log_limited(
                log,
                logging.INFO,
                f"added:{pid}",
                "watching process",
                every=LOG_EVERY,
                pid=pid,
                comm=p.comm,
                reasons=",".join(sorted(p.sources)),
                pod=p.pod_label,
                cmdline=p.cmdline[:200],
            )
        for pid in sorted(old.keys() - new.keys()):
            p = old[pid]
            log_limited(
                log,
                logging.INFO,
                f"dropped:{pid}",
                "no longer watching process",
                every=LOG_EVERY,
                pid=pid,
                comm=p.comm,
                reasons=",".join(sorted(p.sources)),
            )

    def _describe(self, pid: int, cmdline: str, sources: frozenset[str]) -> ProcessInfo | None:
        try:
            start = parse_stat_start_time(self._read(pid, "stat").decode("utf-8", "replace"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, IndexError):
            self._skip("unreadable")
            return None
        cached = self._cache.get((pid, start))
        if cached is not None:
            info = replace(cached, sources=sources) if cached.sources != sources else cached
            info = self._resolve_late(info)
            self._cache[(pid, start)] = info
            return info
        try:
            comm = self._read(pid, "comm").decode("utf-8", "replace").strip()
            cgroup = self._read(pid, "cgroup").decode("utf-8", "replace")
        except FileNotFoundError:
            return None
        except OSError:
            self._skip("unreadable")
            return None
        ident = parse_cgroup(cgroup)
        if ident.unknown_shape:
            self._skip("unknown_cgroup")
            log.debug("cgroup path of unknown shape", extra={"pid": pid, "cgroup": cgroup[:200]})
        pod = namespace = container = workload_kind = workload = ""
        if ident.pod_uid and self.resolver is not None:
            found = self.resolver.lookup(ident.pod_uid)
            if found is not None:
                pod, namespace, containers = found
                container = containers.get(ident.container_id, "")
                workload_kind, workload = self._owner(ident.pod_uid)
        info = ProcessInfo(
            pid=pid,
            comm=comm,
            cmdline=cmdline,
            start_time=start,
            pod_uid=ident.pod_uid,
            container_id=ident.container_id,
            pod=pod,
            namespace=namespace,
            container=container,
            sources=sources,
            workload_kind=workload_kind,
            workload=workload,
        )
        self._cache[(pid, start)] = info
        return info

    def _owner(self, pod_uid: str) -> tuple[str, str]:
        """(kind, name) of the pod's workload, from resolvers that know owners
        (agent.kube.PodWatcher); ("", "") from those that only name pods."""
        owner = getattr(self.resolver, "owner", None)
        return owner(pod_uid) if owner else ("", "")

    def _resolve_late(self, info: ProcessInfo) -> ProcessInfo:
        """Asks the resolver again for a pod it did not know at the process's first sighting
        (a pod scheduled moments before the API's watch delivered it)."""
        if self.resolver is None or not info.pod_uid:
            return info
        if info.pod and (info.container or not info.container_id):
            return info
        found = self.resolver.lookup(info.pod_uid)
        if found is None:
            return info
        pod, namespace, containers = found
        workload_kind, workload = self._owner(info.pod_uid)
        resolved = replace(
            info,
            pod=pod,
            namespace=namespace,
            container=containers.get(info.container_id, ""),
            workload_kind=workload_kind,
            workload=workload,
        )
        if resolved != info:
            self.labels_changed = True
        return resolved

    # -- as a collector -----------------------------------------------------------------
    name = "discovery"

    def collect(self) -> Iterable[Metric]:
        info = WATCHED_PROCESS_INFO.gauge()
        for p in sorted(self._watched.values(), key=lambda p: p.pid):
            info.add_metric(
                [
                    str(p.pid),
                    p.comm,
                    p.pod_label,
                    p.namespace,
                    p.container_label,
                    p.pod_uid,
                    p.container_id,
                    ",".join(sorted(p.sources)),
                    p.workload_kind,
                    p.workload,
                ],
                1.0,
            )
        skipped = SKIPPED_PROCESSES.counter()
        for reason in SKIP_REASONS:
            skipped.add_metric([reason], float(self._skipped.get(reason, 0)))
        counts = dict.fromkeys(WATCH_REASONS, 0)
        for p in self._watched.values():
            for source in p.sources:
                counts[source] = counts.get(source, 0) + 1
        by_reason = WATCHED_PROCESSES.gauge()
        for reason in sorted(counts):
            by_reason.add_metric([reason], float(counts[reason]))
        return [info, skipped, by_reason]

    def ready(self) -> bool:
        return True
