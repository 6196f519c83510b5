"""The DaemonSet's capability list is enough, and each capability in it is needed: a real
agent runs as root with only those capabilities (bounding set, no new privileges, as the
container runtime starts it) against a Python workload of another user, as an inference pod
would be; without any one of them, the collector that needs it says so."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from agentproc import ROOT, VIGIL, free_port, http_get, stop_process
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.bpf, pytest.mark.slow]

WORKLOAD = ROOT / "tests" / "dashboards" / "workload.py"
NOBODY = 65534


def daemonset_caps() -> list[str]:
    ds = yaml.safe_load((ROOT / "deploy" / "agent-daemonset.yaml").read_text())
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    return list(c["securityContext"]["capabilities"]["add"])


def setpriv(caps: list[str]) -> list[str]:
    binary = shutil.which("setpriv")
    if binary is None:
        pytest.fail("setpriv is missing (Debian package util-linux)")
    allowed = ",".join(f"+{c.lower()}" for c in caps)
    return [binary, f"--bounding-set=-all{',' if caps else ''}{allowed}", "--inh-caps=-all",
            "--no-new-privs", "--"]  # fmt: skip


@pytest.fixture(scope="module")
def workload() -> Iterator[int]:
    """The stand-in inference server, as an unprivileged user of its own."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    proc = subprocess.Popen(
        [*setpriv([])[:-1], f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
         sys.executable, str(WORKLOAD)],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd="/",
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield proc.pid
    proc.kill()
    proc.wait()


def run_agent(caps: list[str], collectors: list[str], pid: int, tmp: Path, want) -> dict:  # type: ignore[no-untyped-def]
    """Runs `vigil run` with only ``caps`` until ``want(samples)`` holds or 20 s pass."""
    port = free_port()
    off = [
        f"--no-collector.{c}" for c in ("sched", "gpu", "profile", "drift") if c not in collectors
    ]
    args = ["run", "--listen", f"127.0.0.1:{port}", "--watch", r"dashboards/workload\.py",
            "--kubernetes.mode", "off", "--discovery.interval", "0.3s", "--state-dir", str(tmp),
            "--collector.profile.window", "1s", "--collector.sched.interval", "0.3s",
            *off]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    log = tmp / f"agent-{'-'.join(caps) or 'none'}.log"
    with log.open("w") as out:
        proc = subprocess.Popen([*setpriv(caps), *VIGIL, *args], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
    samples: dict = {}
    try:
        deadline = time.monotonic() + 45  # bcc's compile comes first
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"agent exited {proc.returncode}:\n{log.read_text()}")
            try:
                status, body = http_get(f"http://127.0.0.1:{port}/metrics", timeout=2)
            except OSError:
                status = 0
            if status == 200:
                samples = {
                    (s.name, tuple(sorted(s.labels.items()))): s.value
                    for fam in text_string_to_metric_families(body)
                    for s in fam.samples
                }
                if want(samples):
                    break
            time.sleep(0.3)
    finally:
        stop_process(proc)
    samples["__log__"] = log.read_text()
    return samples


def value(samples: dict, name: str, **labels: str) -> float | None:  # type: ignore[type-arg]
    for (n, lab), v in samples.items():
        if n == name and all(dict(lab).get(k) == x for k, x in labels.items()):
            return float(v)
    return None


def sched_ok(samples: dict) -> bool:  # type: ignore[type-arg]
    return value(samples, "vigil_scrape_collector_success", collector="sched") is not None


def test_the_daemonsets_capabilities_are_enough(workload: int, tmp_path: Path) -> None:
    caps = daemonset_caps()
    pid = str(workload)

    def both(s: dict) -> bool:  # type: ignore[type-arg]
        return (
            value(s, "vigil_scrape_collector_success", collector="sched") == 1
            and value(s, "vigil_sched_context_switches_total", pid=pid) is not None
            and value(s, "vigil_profile_up", pid=pid) == 1
        )

    s = run_agent(caps, ["sched", "profile"], workload, tmp_path, both)
    assert value(s, "vigil_scrape_collector_success", collector="sched") == 1, s["__log__"]
    assert (value(s, "vigil_sched_context_switches_total", pid=pid) or 0) > 0, s["__log__"]
    assert value(s, "vigil_profile_up", pid=pid) == 1, s["__log__"]
    assert (value(s, "vigil_profile_samples_total", pid=pid, state="active") or 0) > 0


@pytest.mark.parametrize("missing", ["BPF", "PERFMON"])
def test_the_scheduler_probes_need_bpf_and_perfmon(
    missing: str, workload: int, tmp_path: Path
) -> None:
    caps = [c for c in daemonset_caps() if c != missing]
    s = run_agent(caps, ["sched"], workload, tmp_path, sched_ok)
    assert value(s, "vigil_scrape_collector_success", collector="sched") == 0, s["__log__"]


def test_py_spy_needs_sys_ptrace(workload: int, tmp_path: Path) -> None:
    caps = [c for c in daemonset_caps() if c != "SYS_PTRACE"]
    pid = str(workload)
    s = run_agent(
        caps, ["profile"], workload, tmp_path,
        lambda s: value(s, "vigil_profile_up", pid=pid) is not None,
    )  # fmt: skip
    assert value(s, "vigil_profile_up", pid=pid) == 0, s["__log__"]
