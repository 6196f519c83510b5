"""Every panel of every dashboard shows data: a real Prometheus scrapes a real agent (real
eBPF, the fake libnvidia-ml.so.1, real py-spy on a real Python workload, drift samples) and a
real rollback controller; each panel's PromQL, with its template variables resolved as
Grafana resolves them, must return at least one series.

The workload runs in a Kubernetes-shaped cgroup (pod UID and container id in the path) and a
local Kubernetes API serves its pod, so the pod variables resolve to a real pod. Scrape labels
(`node`, `cluster`, honor_labels) come from the same relabelings as deploy/servicemonitor.yaml.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentproc import VIGIL, AgentProcess, free_port, http_get, stop_process, wait_http_ready
from catalogue import exposed_families, load_catalogue, undocumented
from grafana import ALL, ROOT, Query, dashboards, queries, resolve_variables, substitute
from prometheus_client.parser import text_string_to_metric_families as text_to_families

from agent.collectors import SPECS
from agent.options import declared

sys.path.insert(0, str(ROOT / "tests" / "deploy"))
sys.path.insert(0, str(ROOT / "tests" / "gpu"))
from fakekube import FakeKubeAPI, make_pod

pytestmark = [pytest.mark.e2e, pytest.mark.bpf, pytest.mark.nvml, pytest.mark.slow]

NODE = "gpu-node-1"
POD, NAMESPACE, CONTAINER = "llm-server-0", "inference", "server"
POD_UID = "7c6d5e4f-3a2b-4c1d-8e9f-0a1b2c3d4e5f"
CONTAINER_ID = "c0ffee" * 10 + "c0de"
MODEL = "fraud-scorer"
# Panels that can only have data on a real GPU (their description says so). The fake
# NVML library serves every field the dashboards read, so none is excused today.
REAL_GPU_ONLY: set[tuple[str, str]] = set()
# Grafana's $__rate_interval is max(4 x scrape interval, step + scrape interval): 4 s at
# the 1 s scrape interval used here, plus one interval of slack for a late scrape.
RATE_INTERVAL = "5s"
RANGE = "1m"
# How long the data may take to appear after everything started: bcc's compile is done by
# then (the agent is ready), so this is the first py-spy window, drift checks and a few
# scrapes.
DATA_DEADLINE_S = 40.0


def enabled(name: str) -> bool:
    return any(s.name == name for s in SPECS)


def options(name: str, wanted: dict[str, str]) -> list[str]:
    """Flags for the options the collector has, from ``wanted`` (short intervals)."""
    spec = next((s for s in SPECS if s.name == name), None)
    if spec is None:
        return []
    have = {o.key for o in declared(spec.settings)}
    return [a for k, v in wanted.items() if k in have for a in (f"--collector.{name}.{k}", v)]


# --- the pod the workload pretends to be in ------------------------------------------------


def cgroup2_root() -> Path | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] == "cgroup2":
            return Path(left.split()[4])
    return None


@dataclass
class PodCgroup:
    """A kubepods-shaped cgroup v2 directory holding the workload (root only)."""

    root: Path
    leaf: Path
    made: list[Path] = field(default_factory=list)

    @classmethod
    def enter(cls, pid: int) -> PodCgroup | None:
        root = cgroup2_root()
        if root is None or os.geteuid() != 0:
            return None
        slug = POD_UID.replace("-", "_")
        rel = [
            "kubepods.slice",
            "kubepods-burstable.slice",
            f"kubepods-burstable-pod{slug}.slice",
            f"cri-containerd-{CONTAINER_ID}.scope",
        ]
        cg = cls(root, root.joinpath(*rel))
        path = root
        try:
            for part in rel:
                path = path / part
                if not path.exists():
                    path.mkdir()
                    cg.made.append(path)
            (cg.leaf / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            # As root on cgroup v2 (CI) this must work: failing here would otherwise
            # hide broken pod attribution behind a skip.
            cg.leave(pid)
            raise RuntimeError(f"cannot put the workload in a pod cgroup: {exc}") from exc
        return cg

    def leave(self, pid: int) -> None:
        with contextlib.suppress(OSError):  # gone already
            (self.root / "cgroup.procs").write_text(str(pid))
        for path in reversed(self.made):
            for _ in range(50):  # rmdir fails while the exiting process is still listed
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)
        self.made = []


# --- Prometheus -----------------------------------------------------------------------------


def prom_relabelings(service_monitor_endpoint: dict[str, Any]) -> list[dict[str, Any]]:
    """A ServiceMonitor endpoint's relabelings in Prometheus' own spelling."""
    keys = {
        "sourceLabels": "source_labels",
        "targetLabel": "target_label",
        "replacement": "replacement",
        "regex": "regex",
        "action": "action",
        "separator": "separator",
    }
    return [{keys[k]: v for k, v in r.items()} for r in service_monitor_endpoint["relabelings"]]


def service_monitor(path: Path, name: str) -> dict[str, Any]:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc["kind"] == "ServiceMonitor" and doc["metadata"]["name"] == name:
            (ep,) = doc["spec"]["endpoints"]
            return dict(ep)
    raise AssertionError(f"no ServiceMonitor {name} in {path}")


class Prometheus:
    def __init__(self, workdir: Path, jobs: list[dict[str, Any]]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed (apt-get install prometheus)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The generated rule file, recording rules included: the fleet panels read their
        # series, evaluated every second here so that they exist within the data deadline.
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(ROOT / "alerts" / "vigil.rules.yml")],
            "scrape_configs": jobs,
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = open(workdir / "prometheus.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        wait_http_ready(self.url + "/-/ready", self.proc, "prometheus", self.logs)

    def logs(self) -> str:
        return Path(self.log.name).read_text()[-3000:]

    def api(self, path: str, **params: str | list[str]) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        status, body = http_get(f"{self.url}/api/v1/{path}?{query}", timeout=10)
        doc = json.loads(body)
        if status != 200 or doc.get("status") != "success":
            raise AssertionError(f"{path} {params}: HTTP {status}: {body[:500]}")
        return doc["data"]

    def label_values(self, selector: str, label: str) -> list[str]:
        params: dict[str, str | list[str]] = {"match[]": [selector]} if selector else {}
        return list(self.api(f"label/{label}/values", **params))

    def series_count(self, expr: str, instant: bool) -> int:
        now = time.time()
        if instant:
            data = self.api("query", query=expr, time=f"{now:.3f}")
        else:
            data = self.api(
                "query_range", query=expr, start=f"{now - 60:.3f}", end=f"{now:.3f}", step="1"
            )
        result = data["result"]
        if data["resultType"] == "scalar":
            return 1
        if data["resultType"] == "matrix":
            return sum(1 for r in result if r.get("values"))
        return len(result)

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


# --- the rollback controller ----------------------------------------------------------------


class RollbackController:
    """`vigil rollback-controller` on a release directory, with a token."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = "dashboards-test-token"
        token = workdir / "rollback-token"
        token.write_text(self.token + "\n")
        token.chmod(0o600)  # a token others can read is refused
        self.models = workdir / "models" / MODEL
        for i, version in enumerate(("v1", "v2")):
            (self.models / version).mkdir(parents=True)
            os.utime(self.models / version, (1_700_000_000 + i, 1_700_000_000 + i))
        (self.models / "current").symlink_to("v2")
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
        self.log = open(workdir / "rollback.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                *VIGIL,
                "rollback-controller",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--release-dir",
                str(self.models),
                "--token-file",
                str(token),
                "--state-dir",
                str(workdir / "rollback-state"),
                "--cooldown",
                "1s",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        wait_http_ready(
            self.url + "/readyz",
            self.proc,
            "rollback controller",
            lambda: Path(self.log.name).read_text(),
        )

    def alert(self) -> None:
        """What Alertmanager sends for a firing drift alert (webhook payload version 4)."""
        labels = {
            "alertname": "VigilInputDriftDetected",
            "action": "rollback",
            "severity": "critical",
            "model": MODEL,
            "version": "v2",
        }
        alert = {
            "status": "firing",
            "labels": labels,
            "annotations": {"summary": "drift"},
            "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph",
            "fingerprint": "0123456789abcdef",
        }
        payload = {
            "version": "4",
            "groupKey": '{}:{alertname="VigilInputDriftDetected"}',
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "vigil-rollback",
            "groupLabels": {"alertname": "VigilInputDriftDetected"},
            "commonLabels": labels,
            "commonAnnotations": {},
            "externalURL": "http://alertmanager",
            "alerts": [alert],
        }
        req = urllib.request.Request(
            self.url + "/v1/alerts",
            data=json.dumps(payload).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert 200 <= r.status < 300

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


# --- drift ----------------------------------------------------------------------------------


def feed_drift(agent: AgentProcess, workdir: Path) -> None:
    """A reference for the model, then a window of samples that moved, and one bad batch."""
    import random

    rng = random.Random(7)
    reference = workdir / "reference.jsonl"
    with reference.open("w") as f:
        for _ in range(2000):
            row = {"amount": rng.gauss(50, 10), "age": rng.gauss(40, 12)}
            row.update(country=rng.choice(["DE", "FR", "US"]), confidence=rng.betavariate(8, 2))
            f.write(json.dumps(row) + "\n")
    done = subprocess.run(
        [*VIGIL, "drift", "reference", "set", "--model", MODEL, "--version", "v2",
         "--state-dir", str(workdir / "state"), "--categorical", "country",
         "--confidence", "confidence", str(reference)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    moved = [
        {"amount": rng.gauss(80, 10), "age": rng.gauss(40, 12), "country": rng.choice(["DE", "BR"]),
         "confidence": rng.betavariate(3, 2)}
        for _ in range(1000)
    ]  # fmt: skip
    bad = [{"amount": None, "age": 40.0, "country": "DE", "confidence": 0.5}]
    for rows in (moved, bad):
        # The agent picks a new reference up at its next check of the store.
        deadline = time.monotonic() + 15
        while True:
            req = urllib.request.Request(
                f"{agent.url}/v1/drift/{MODEL}/samples",
                data=json.dumps({"version": "v2", "rows": rows}).encode(),
                headers={"Content-Type": "application/json", **agent.auth()},
                method="POST",
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    assert r.status == 200
                break
            except urllib.error.HTTPError as exc:
                if exc.code == 404 and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                assert rows is bad and exc.code == 422, exc.read()  # dropped, and counted
                break


# --- the stack ------------------------------------------------------------------------------


@dataclass
class Stack:
    prometheus: Prometheus
    agent: AgentProcess
    pod_cgroup: PodCgroup | None
    kube_wired: bool
    notes: list[str]
    controller: RollbackController | None = None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("dashboards")
    notes: list[str] = []
    workload = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "workload.py")],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert workload.stdout is not None and workload.stdout.readline().strip() == "ready"
    cgroup = PodCgroup.enter(workload.pid)
    if cgroup is None:
        notes.append("workload not in a pod cgroup (needs root and cgroup v2)")
    api = FakeKubeAPI().__enter__()
    api.put(make_pod(POD, NAMESPACE, POD_UID, NODE, {CONTAINER: CONTAINER_ID}))
    kubeconfig = api.kubeconfig(work / "kubeconfig")

    env: dict[str, str] = {"TMPDIR": str(work)}
    scenario = None
    if enabled("gpu"):
        from fakenvml import build, two_gpus

        lib = build(work / "nvml")
        scenario = two_gpus(work / "scenario.txt", (workload.pid,) * 3)
        scenario.write()
        env |= {
            "LD_LIBRARY_PATH": str(lib.parent),
            "FAKE_NVML_SCENARIO": str(scenario.path),
            "FAKE_NVML_CALLS": str(work / "nvml-calls"),
        }
    args = [
        "--watch", r"dashboards/workload\.py",
        "--discovery.interval", "0.5s",
        "--state-dir", str(work / "state"),
        "--kubernetes.mode", "on",
        "--kubernetes.node-name", NODE,
        "--kubernetes.kubeconfig", str(kubeconfig),
        *options("sched", {"interval": "0.5s"}),
        *options("gpu", {"interval": "0.5s"}),
        *options("profile", {"interval": "1s", "duration": "1s", "window": "1s", "rate": "50"}),
        *options("drift", {"interval": "0.5s", "check-interval": "0.5s", "min-samples": "100"}),
        # The workload serves vLLM's /health and /metrics (workload.py); 1 s, above the
        # 0.5 s probe timeout the probes must stay shorter than.
        *options("inference", {"interval": "1s"}),
        # A verdict needs 20 s of evidence (docs/diagnosis.md): rounds every second.
        *options("cgroup", {"interval": "0.5s"}),
        *options("diagnosis", {"interval": "1s", "window": "22s"}),
    ]  # fmt: skip
    agent = AgentProcess(args, env=env, ready_timeout=90).__enter__()
    if scenario is not None:
        # An XID error (79: fallen off the bus) reaches event sets registered before it.
        scenario.xids = [(0, 79)]
        scenario.write()
    controller = RollbackController(work)

    agent_ep = service_monitor(ROOT / "deploy" / "servicemonitor.yaml", "vigil-agent")
    jobs: list[dict[str, Any]] = [
        {
            "job_name": "vigil-agent",
            "honor_labels": agent_ep["honorLabels"],
            # What the Kubernetes service discovery would say about the agent's pod.
            "static_configs": [
                {
                    "targets": [f"127.0.0.1:{agent.port}"],
                    "labels": {
                        "__meta_kubernetes_pod_node_name": NODE,
                        "__meta_kubernetes_pod_name": "vigil-agent-x7k2p",
                    },
                }
            ],
            "relabel_configs": prom_relabelings(agent_ep),
        }
    ]
    if controller is not None:
        ctl_ep = service_monitor(ROOT / "deploy" / "rollback-controller.yaml",
                                 "vigil-rollback-controller")  # fmt: skip
        jobs.append(
            {
                "job_name": "vigil-rollback-controller",
                "static_configs": [{"targets": [f"127.0.0.1:{controller.port}"]}],
                "relabel_configs": prom_relabelings(ctl_ep),
            }
        )
    prometheus = Prometheus(work, jobs)
    try:
        if enabled("drift"):
            feed_drift(agent, work)
        if controller is not None:
            controller.alert()
        kube_wired = bool(
            re.search(
                r"\bkube\.(from_config|start_resolver)\b", (ROOT / "agent" / "app.py").read_text()
            )
        )
        if not kube_wired:
            notes.append("agent/app.py does not start the pod watcher: pod label is the pod UID")
        yield Stack(prometheus, agent, cgroup, kube_wired, notes, controller)
    finally:
        prometheus.stop()
        if controller is not None:
            controller.stop()
        agent.__exit__(None, None, None)
        api.__exit__(None, None, None)
        if cgroup is not None:
            cgroup.leave(workload.pid)
        workload.kill()
        workload.wait()


# --- the proof ------------------------------------------------------------------------------


def preferred(stack: Stack) -> dict[str, str]:
    pod = POD if stack.kube_wired else POD_UID
    # The pod's processes, whatever their container, command and pid: the pod is the choice.
    every = dict.fromkeys(("container", "comm", "pid"), ALL)
    return {"node": NODE, "namespace": NAMESPACE, "pod": pod, "model": MODEL, "gpu": "0", **every}


def run_all(stack: Stack) -> dict[Query, int | str]:
    results: dict[Query, int | str] = {}
    for name, board in dashboards().items():
        values = resolve_variables(board, stack.prometheus.label_values, preferred(stack))
        values |= {"__rate_interval": RATE_INTERVAL, "__range": RANGE, "datasource": ""}
        for q in queries(name, board):
            expr = substitute(q.expr, values)
            try:
                results[q] = stack.prometheus.series_count(expr, q.instant)
            except AssertionError as exc:
                results[q] = f"error: {exc}"
    return results


def report(results: dict[Query, int | str]) -> str:
    lines = []
    for q, n in sorted(results.items(), key=lambda kv: (kv[0].dashboard, kv[0].panel, kv[0].ref)):
        mark = "ok " if isinstance(n, int) and n > 0 else "NO "
        lines.append(f"{mark} {q.dashboard:32} {q.panel:42} {q.ref}  series={n}")
    return "\n".join(lines)


def test_every_panel_has_data(stack: Stack) -> None:
    deadline = time.monotonic() + DATA_DEADLINE_S
    while True:
        results = run_all(stack)
        empty = [
            q
            for q, n in results.items()
            if not (isinstance(n, int) and n > 0) and (q.dashboard, q.panel) not in REAL_GPU_ONLY
        ]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(2)
    table = report(results)
    print("\n" + table + "\n" + "\n".join(stack.notes))
    report_path = os.environ.get("VIGIL_DASHBOARD_REPORT")
    if report_path:
        Path(report_path).write_text(table + "\n")
    assert not empty, (
        "panels without data:\n"
        + "\n".join(f"  {q.dashboard}: {q.panel} [{q.ref}] {q.expr}" for q in empty)
        + "\n\n"
        + table
        + "\nnotes: "
        + "; ".join(stack.notes)
        + "\nagent log tail:\n"
        + stack.agent.logs()[-3000:]
    )


def test_excused_panels_say_why() -> None:
    by_panel = {(q.dashboard, q.panel): q for n, b in dashboards().items() for q in queries(n, b)}
    for key in REAL_GPU_ONLY:
        assert "only on a real GPU" in by_panel[key].description, key


def test_variables_resolve_to_the_workloads_pod(stack: Stack) -> None:
    if stack.pod_cgroup is None:
        pytest.skip("the workload could not be put in a pod cgroup here")
    board = dashboards()["vigil-inference-workload.json"]
    want_pod = POD if stack.kube_wired else POD_UID
    # Each variable resolves from what Prometheus has scraped so far: on a busy machine the
    # first scrapes of the agent may still be under way, so wait for all of them together.
    values = resolve_variables(board, stack.prometheus.label_values, {})
    deadline = time.monotonic() + 30
    while (values["node"], values["pod"]) != (NODE, want_pod) and time.monotonic() < deadline:
        time.sleep(1)
        values = resolve_variables(board, stack.prometheus.label_values, {})
    assert values["node"] == NODE
    assert values["cluster"] == "gpu-cluster"  # from deploy/servicemonitor.yaml
    assert values["pod"] == want_pod
    if stack.kube_wired:
        assert values["namespace"] == NAMESPACE


# Catalogued families that only a particular setup produces, each with the reason.
CONDITIONAL = {
    "vigil_gpu_pcie_throughput_bytes_per_second": "only with --collector.gpu.pcie-throughput",
    "vigil_gpu_mig_info": "only for GPUs in MIG mode",
    "vigil_gpu_mig_memory_used_bytes": "only for GPUs in MIG mode",
    "vigil_gpu_mig_memory_free_bytes": "only for GPUs in MIG mode",
    "vigil_gpu_mig_memory_total_bytes": "only for GPUs in MIG mode",
    "vigil_inference_deep_probe_up": "only with --collector.inference.deep-probe, for kinds "
    "with a deep check (vLLM has none)",
    "vigil_inference_scrape_errors_total": "only once a server's /metrics could not be read",
    "vigil_inference_targets_dropped": "only when targets were over the cap or unreachable",
}


def test_full_output_and_catalogue_agree_both_ways(stack: Stack) -> None:
    """Every family the agent and the controller export is catalogued, and every catalogued
    family is exported once every collector has data (docs/metrics.md)."""
    assert stack.controller is not None
    rows = load_catalogue()
    # bench/fleet simulates its nodes from this real exposition (bench/fleet/README.md).
    exposition = os.environ.get("VIGIL_NODE_EXPOSITION")
    deadline = time.monotonic() + DATA_DEADLINE_S
    while True:
        agent_text = stack.agent.metrics()
        status, controller_text = http_get(stack.controller.url + "/metrics")
        assert status == 200
        exposed = exposed_families(agent_text) | exposed_families(controller_text)
        missing = sorted(n for n in rows if n not in exposed and n not in CONDITIONAL)
        # A # TYPE line is enough for the catalogue, but the fleet template counts series:
        # a capture also waits for every family's series (those some setups never have
        # until the deadline; tests/unit/test_cardinality_budget.py lists them).
        empty = exposition and any(not f.samples for f in text_to_families(agent_text))
        if (not missing and not empty) or time.monotonic() > deadline:
            break
        time.sleep(1)
    if exposition:
        Path(exposition).write_text(agent_text)
    assert undocumented(agent_text, rows) == []
    assert undocumented(controller_text, rows) == []
    assert missing == [], f"catalogued but never exported: {missing}"
    assert set(CONDITIONAL) <= set(rows), "CONDITIONAL names a family the catalogue lacks"
