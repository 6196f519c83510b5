"""Set-up of the sched collector: the preflight on this host, the header source handed to
bcc, and what `vigil doctor` prints.

The preflight (agent/collectors/sched/preflight.py) runs before the probe is loaded, so a
missing piece is reported as itself rather than as a compiler or verifier error. The
doctor also compiles and attaches the probe once (about a second).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from agent.checks import bcc_check
from agent.collectors.sched.preflight import (
    HostFacts,
    HostPaths,
    Verdict,
    fresh_header_view,
    gather,
    preflight,
)
from agent.collectors.sched.probe import (
    PROBE_PATH,
    REQUIRED_FIELDS,
    SchedProbe,
    map_bytes,
    missing_fields,
)
from agent.collectors.sched.settings import SchedSettings
from agent.registry import Check, CollectorUnavailable, Paths

KSRC = "BCC_KERNEL_SOURCE"
# A BCC_KERNEL_SOURCE the operator set is theirs to keep; the one the agent sets is not.
OPERATOR_KSRC = os.environ.get(KSRC)


class Setup:
    """One host's preflight and header choice, shared by the collector and the doctor."""

    def __init__(
        self,
        mode: str = SchedSettings.mode,
        host_root: str = SchedSettings.host_root,
        max_threads: int = SchedSettings.max_threads,
        paths: HostPaths | None = None,
        release: str | None = None,
    ) -> None:
        self.mode = mode
        self.max_threads = max_threads
        self.paths = paths or HostPaths(host_root=host_root)
        self.release = release
        self.facts: HostFacts | None = None
        self.verdict: Verdict | None = None
        self._tree: tuple[str, str | None] | None = None
        self._view: str | None = None  # the merged header view last built, removed on the next

    def run(self) -> Verdict:
        facts, self._tree = gather(self.paths, self.release)
        if facts.tracefs is not None:
            root = Path(self.paths.sys + facts.tracefs.removeprefix("/sys"))
            facts = replace(facts, missing_fields=tuple(missing_fields(root)))
        self.facts = facts
        self.verdict = preflight(facts, self.mode, map_bytes(self.max_threads))
        return self.verdict

    def checks(self) -> list[Check]:
        """bcc, then the preflight's checks, first failure first."""
        verdict = self.run()
        checks = [bcc_check(), *verdict.checks]
        if OPERATOR_KSRC is not None:
            checks.append(Check(KSRC, True, f"{OPERATOR_KSRC} (set by the operator)"))
        return checks

    def apply_headers(self, workdir: str | None = None) -> str:
        """Points bcc at the header source the preflight chose; says which."""
        if OPERATOR_KSRC is not None:
            return f"BCC_KERNEL_SOURCE={OPERATOR_KSRC} (set by the operator)"
        verdict = self.verdict or self.run()
        os.environ.pop(KSRC, None)
        source = verdict.header_source
        if source == "host" and self._tree is not None:
            build, split = self._tree
            if self.paths.host_root.rstrip("/") in ("", "/"):
                return f"host: /lib/modules/{self.facts_release()}/build (bcc's own lookup)"
            path = build
            if split is not None:
                tmp = workdir or os.environ.get("TMPDIR") or "/tmp"
                path = fresh_header_view(build, split, tmp, self.facts_release(), self._view)
                self._view = path
            os.environ[KSRC] = path
            return f"host: {build}" + (f" + {split}" if split else "") + f" ({KSRC}={path})"
        if source == "placed" and verdict.header_path is not None:
            os.environ[KSRC] = verdict.header_path
            return f"placed: {verdict.header_path} ({KSRC})"
        if source == "kheaders":
            return "kheaders: /sys/kernel/kheaders.tar.xz, unpacked by bcc"
        return "none"

    def facts_release(self) -> str:
        return self.facts.release if self.facts else os.uname().release

    def load(self, mode: str, max_threads: int) -> SchedProbe:
        self.apply_headers()
        return SchedProbe(mode, max_threads)


def compile_check(setup: Setup) -> Check:
    what = f"probe {PROBE_PATH.name} compiles and attaches"
    try:
        used = setup.apply_headers()
        probe = SchedProbe(setup.mode, 1024)
    except CollectorUnavailable as exc:
        return Check(what, False, exc.reason, exc.fix)
    except OSError as exc:  # the merged header view could not be written
        return Check(what, False, f"preparing the headers failed: {exc}", "a writable $TMPDIR")
    probe.close()
    count = len(REQUIRED_FIELDS)
    return Check(
        what, True, f"{count} tracepoints attached and detached ({setup.mode} mode), headers {used}"
    )


def doctor(settings: SchedSettings, paths: Paths) -> list[Check]:
    setup = Setup(settings.mode, settings.host_root, settings.max_threads)
    checks = setup.checks()
    if all(c.ok for c in checks):
        checks.append(compile_check(setup))
    return checks
