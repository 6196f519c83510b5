"""The scrape configurations docs/deploy.md shows for the `node` and `cluster` labels: valid
for promtool, and the one outside Kubernetes, run by a real Prometheus against a real agent,
labels the agent's series as the dashboards filter them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentproc import AgentProcess, free_port, http_get, stop_process, wait_http_ready

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "deploy.md"
ARGS = [
    "--kubernetes.mode",
    "off",
    "--no-collector.sched",
    "--no-collector.profile",
    "--no-collector.drift",
    "--no-collector.gpu",
]


def scrape_configs() -> list[dict[str, Any]]:
    """Every ```yaml block of docs/deploy.md that is a Prometheus configuration."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    docs = [yaml.safe_load(b) for b in blocks]
    return [d for d in docs if isinstance(d, dict) and "scrape_configs" in d]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (apt-get install prometheus)")
    return path


NODE = "gpu-node-1"


def runnable(config: dict[str, Any], port: int) -> tuple[dict[str, Any], dict[str, str]]:
    """The documented configuration aimed at a local agent, and the labels it must give.

    Debian's Prometheus is built without Kubernetes service discovery: the pod it would
    discover becomes a static target carrying the same ``__meta_kubernetes_*`` labels, so
    the documented relabelings run as written."""
    config = json.loads(json.dumps(config))
    (job,) = config["scrape_configs"]
    if "kubernetes_sd_configs" in job:
        del job["kubernetes_sd_configs"]
        meta = {
            "__meta_kubernetes_pod_node_name": NODE,
            "__meta_kubernetes_pod_name": "vigil-agent-x7k2p",
            "__meta_kubernetes_pod_label_app_kubernetes_io_name": "vigil-agent",
            "__meta_kubernetes_pod_container_port_number": "9475",
        }
        job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"], "labels": meta}]
        rules = {r.get("target_label"): r for r in job["relabel_configs"]}
        want = {"node": NODE, "cluster": rules["cluster"]["replacement"]}
    else:
        first = job["static_configs"][0]
        job["static_configs"] = [{**first, "targets": [f"127.0.0.1:{port}"]}]
        want = {"node": first["labels"]["node"], "cluster": first["labels"]["cluster"]}
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s"}
    return config, want


def test_the_docs_show_both_configurations_and_promtool_accepts_them(tmp_path: Path) -> None:
    configs = scrape_configs()
    kinds = {next(k for k in job if k.endswith("_configs") and k != "relabel_configs")
             for c in configs for job in c["scrape_configs"]}  # fmt: skip
    assert kinds == {"kubernetes_sd_configs", "static_configs"}, kinds
    for i, documented in enumerate(configs):
        config, _ = runnable(documented, 9475)
        path = tmp_path / f"prometheus-{i}.yml"
        path.write_text(yaml.safe_dump(config))
        r = subprocess.run(
            [tool("promtool"), "check", "config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        for job in config["scrape_configs"]:
            assert job.get("honor_labels") is True, job["job_name"]


@pytest.mark.parametrize("which", ["kubernetes_sd_configs", "static_configs"])
def test_documented_configuration_labels_a_real_agents_series(tmp_path: Path, which: str) -> None:
    (documented,) = [c for c in scrape_configs() if which in c["scrape_configs"][0]]
    with AgentProcess(ARGS) as agent:
        config, want = runnable(documented, agent.port)
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(tmp_path / "prometheus.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            wait_http_ready(url + "/-/ready", proc, "prometheus", lambda: "")
            # What the dashboards' cluster and node variables ask.
            query = urllib.parse.urlencode({"query": "vigil_build_info"})
            result: list[dict[str, Any]] = []
            deadline = time.monotonic() + 30
            while not result and time.monotonic() < deadline:
                time.sleep(0.5)
                status, body = http_get(f"{url}/api/v1/query?{query}", timeout=10)
                assert status == 200, body
                result = json.loads(body)["data"]["result"]
        finally:
            stop_process(proc)
            log.close()
    assert result, (tmp_path / "prometheus.log").read_text()[-2000:]
    labels = result[0]["metric"]
    assert {k: labels.get(k) for k in want} == want
