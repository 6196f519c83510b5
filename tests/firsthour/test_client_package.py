"""The drift client installs into a model server's own environment (a fresh venv that has
never seen the agent, no index) and sends samples a real agent accepts."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
from agentproc import ROOT, AgentProcess

import agent.drift.client
from agent.collectors.drift.ks import ReferenceSample
from agent.collectors.drift.store import ReferenceStore

pytestmark = pytest.mark.slow

CLIENT = ROOT / "clients" / "python"
QUICK = ["--no-collector.sched", "--no-collector.profile", "--no-collector.gpu"]


def test_the_agent_uses_the_package_not_a_copy() -> None:
    import vigil_client

    assert agent.drift.client.DriftClient is vigil_client.DriftClient
    assert agent.drift.client.find_token is vigil_client.find_token


def test_the_client_source_parses_as_python_3_9() -> None:
    for path in [*sorted((CLIENT / "vigil_client").glob("*.py")), CLIENT / "build_backend.py"]:
        ast.parse(path.read_text(), str(path), feature_version=(3, 9))


@pytest.fixture(scope="module")
def server_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model server's environment: a plain venv (no system site-packages), no index."""
    python3 = shutil.which("python3")
    assert python3 is not None
    venv = tmp_path_factory.mktemp("server") / "venv"
    subprocess.run([python3, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index",
         "--disable-pip-version-check", str(CLIENT)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return venv


def test_installs_offline_into_a_fresh_venv_and_sends_samples(
    server_venv: Path, tmp_path: Path
) -> None:
    python = str(server_venv / "bin" / "python")
    # The venv cannot see the agent's package: the client stands on its own.
    run = {"cwd": tmp_path, "env": {"PATH": "/usr/bin:/bin"}, "timeout": 90}
    no_agent = subprocess.run([python, "-c", "import agent"], capture_output=True, **run)
    assert no_agent.returncode != 0
    state = tmp_path / "state"
    rng = np.random.default_rng(0)
    ReferenceStore(state).save(
        "fraud", "v1", ReferenceSample(rng.normal(size=(300, 2)), ("amount", "age")), "test"
    )
    with AgentProcess([*QUICK, "--state-dir", str(state)]) as a:
        script = textwrap.dedent(
            f"""
            import json, vigil_client
            from vigil_client import DriftClient
            drift = DriftClient({a.url!r}, model="fraud", version="v1",
                                token_file={str(a.token_path())!r}, flush_interval=0.1)
            for i in range(250):
                drift.record({{"amount": i / 250, "age": 1 - i / 250}})
            drift.close(timeout=30)
            print(json.dumps({{"file": vigil_client.__file__, **drift.stats()}}))
            """
        )
        done = subprocess.run([python, "-c", script], capture_output=True, text=True, **run)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert out["file"].startswith(str(server_venv)), out  # the installed copy ran
        assert out["sent"] == 250, out
        status, body = a.get("/v1/drift", auth=True)
        assert status == 200, body
        total = [
            ln for ln in a.metrics().splitlines()
            if ln.startswith('vigil_drift_samples_total{model="fraud"')
        ]  # fmt: skip
        assert total and float(total[0].rsplit(" ", 1)[1]) == 250, total
