"""`vigil doctor` checks for the inference collector: can the agent see listening sockets,
which servers does it find, and do they answer."""

from __future__ import annotations

import os

from agent.collectors.inference import kinds, probe
from agent.collectors.inference.settings import InferenceSettings
from agent.collectors.inference.targets import ProcReader, parse_static_target
from agent.registry import Check, Paths

# The doctor looks at this many server processes at most: it is a quick look, not a scan.
MAX_LOOKED_AT = 16


def _cmdline(procfs: str, pid: str) -> str:
    try:
        with open(f"{procfs}/{pid}/cmdline", "rb") as f:
            return f.read().rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _answer(host: str, port: int, path: str, timeout: float) -> tuple[bool, str]:
    try:
        resp = probe.get_ok(host, port, path, timeout, 64 * 1024)
    except probe.ProbeFailure as exc:
        return False, f"{path}: {exc.reason} ({exc.detail})"
    return True, f"{path} answered {resp.status} in {resp.duration_s * 1000:.0f} ms"


def doctor(settings: InferenceSettings, paths: Paths) -> list[Check]:
    """Sockets readable? Which servers (by command line) listen where, and does each one's
    health path answer within the probe timeout? Configured targets too."""
    checks: list[Check] = []
    reader = ProcReader(paths.procfs)
    own_ns = reader.netns("self")
    if not own_ns:
        checks.append(
            Check(
                "network namespaces",
                False,
                f"cannot read {paths.procfs}/self/ns/net",
                "mount the host's /proc and run as root",
            )
        )
    try:
        pids = sorted((p for p in os.listdir(paths.procfs) if p.isdigit()), key=int)
    except OSError as exc:
        return [*checks, Check("procfs", False, f"cannot list {paths.procfs}: {exc.strerror}")]
    found = 0
    for pid in pids:
        kind = kinds.kind_from_cmdline(_cmdline(paths.procfs, pid))
        if kind is None:
            continue
        found += 1
        if found > MAX_LOOKED_AT:
            break
        what = f"{kind} server pid {pid}"
        listeners = reader.listeners(int(pid))
        if not listeners:
            # A server still loading its model listens a little later: no failure of the
            # collector. Sockets that cannot be seen at all are one.
            readable = _can_list(os.path.join(paths.procfs, pid, "fd"))
            checks.append(
                Check(
                    what,
                    readable,
                    "not listening on TCP yet (still starting?)"
                    if readable
                    else f"cannot read {paths.procfs}/{pid}/fd: its sockets are not visible",
                    ""
                    if readable
                    else "run vigil as root (hostPID in Kubernetes), or name the target in "
                    "collectors.inference.targets",
                )
            )
            continue
        ns = reader.netns(int(pid))
        if ns and ns != own_ns:
            ports = ", ".join(str(lst.port) for lst in listeners)
            checks.append(
                Check(
                    what,
                    True,
                    f"listens on {ports} in another network namespace: reached through its "
                    "pod IP (or --collector.inference.node-address for the host's)",
                )
            )
            continue
        info = kinds.INFO[kind]
        results = [
            _answer(
                "127.0.0.1" if ":" not in lst.address else "::1",
                lst.port,
                info.health_path,
                settings.timeout,
            )
            for lst in listeners
        ]
        ok = any(r[0] for r in results)
        detail = "; ".join(
            f"port {lst.port} {r[1]}" for lst, r in zip(listeners, results, strict=True)
        )
        checks.append(
            Check(
                what,
                ok,
                detail,
                "" if ok else "is the server up? raise --collector.inference.timeout if it is slow",
            )
        )
    if found == 0 and not settings.targets:
        checks.append(
            Check(
                "inference servers",
                True,
                "no process whose command line names a known server (vLLM, SGLang, TGI, Triton, "
                "MLServer/KServe, TorchServe); others are found by their /metrics once watched",
            )
        )
    for entry in settings.targets:
        t = parse_static_target(entry)
        if not t.kind:
            checks.append(Check(f"target {entry}", True, "kind learned from its /metrics"))
            continue
        ok, detail = _answer(
            t.host, t.port, t.base_path + kinds.INFO[t.kind].health_path, settings.timeout
        )
        checks.append(
            Check(
                f"target {entry}", ok, detail, "" if ok else "is the URL right and the server up?"
            )
        )
    return checks


def _can_list(directory: str) -> bool:
    try:
        os.listdir(directory)
    except OSError:
        return False
    return True
