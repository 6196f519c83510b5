"""A new user's first hour, walked from the README itself: the quick start and the drift
section, in a fresh copy of the repository, with the commands read out of README.md.

What a new user would type, and what runs here instead (the rest runs as written):

- ``make run`` is ``make setup`` then ``.venv/bin/vigil run``. Setup is what this suite
  already ran; the agent runs from the copy's own sources with this suite's interpreter
  (``python -m agent.cli run``, working directory the copy), on a free port
  (``VIGIL_LISTEN``) and a state directory of its own (``VIGIL_STATE_DIR``) so that it meets
  no other agent, with sched and profile off (they need minutes of CPU this test does not
  look at). The default ``--watch`` is untouched: that is what the walk-through checks.
- ``make test`` is the suite this test belongs to: not run again from inside it.
- ``localhost:9475`` in a command is the free port above.
- ``vigil ...`` is ``python -m agent.cli ...`` in the copy, with the same environment.
- ``pip install ./clients/python`` runs as written in a fresh venv (the model server's
  environment), with ``PIP_NO_INDEX=1``: the client needs nothing from an index.

The copy holds what a clone of this tree holds: the files git tracks or would track (not
those it ignores), so uncommitted work is walked exactly as a clone will walk it once
committed. A plain ``python serve.py`` that imports scikit-learn (the interpreter of the
inference tests' server venv, which has it) must be watched without any ``--watch``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from agentproc import ROOT, free_port, http_get, stop_process, wait_http_ready
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

README = ROOT / "README.md"
SERVERS_PY = Path(os.environ.get("VIGIL_SERVERS_VENV", ROOT / ".venv-servers")) / "bin" / "python"
QUICK = ["--no-collector.sched", "--no-collector.profile", "--kubernetes.mode", "off"]
SERVE = """\
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
from sklearn.linear_model import LogisticRegression

model = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = str(int(model.predict([[2.5]])[0])).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)


print("serving", flush=True)
HTTPServer(("127.0.0.1", 0), Handler).serve_forever()
"""


# --- reading the README (pure) -----------------------------------------------------------


def section(markdown: str, heading: str) -> str:
    """The text under the first heading containing ``heading``, up to the next heading of
    the same or a higher level (a ``#`` line inside a code block is no heading)."""
    headings: list[tuple[int, int, str]] = []  # (line, level, text)
    lines = markdown.splitlines()
    fenced = False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"^(#+)\s", line)):
            headings.append((i, len(m.group(1)), line))
    for k, (i, level, text) in enumerate(headings):
        if heading in text:
            end = next((j for j, lv, _ in headings[k + 1 :] if lv <= level), len(lines))
            return "\n".join(lines[i + 1 : end])
    raise AssertionError(f"README.md has no heading with {heading!r}")


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)


def shell_commands(text: str) -> list[str]:
    """The commands of the ``sh`` blocks: comments dropped, continuations joined."""
    out = []
    for block in code_blocks(text, "sh"):
        joined = re.sub(r"\s*\\\n\s*", " ", block)
        for line in joined.splitlines():
            cmd = line.split(" #", 1)[0].strip()
            if cmd and not cmd.startswith("#"):
                out.append(cmd)
    return out


def inline_commands(text: str) -> list[str]:
    """Commands quoted inline in the prose (`curl ...`, `vigil ...`)."""
    spans = re.findall(r"`([^`\n]+)`", text)
    return [s for s in spans if re.match(r"^(curl|vigil) [a-z]", s)]


def test_reading_the_readme() -> None:
    md = "# A\n## Quick start\n```sh\nmake run  # go\n# only a comment\nls \\\n  -l\n```\n" + (
        "Then `curl localhost:9475/metrics` and `vigil doctor`; `--watch` is a flag.\n## Next\nx\n"
    )
    quick = section(md, "Quick start")
    assert "Next" not in quick
    assert shell_commands(quick) == ["make run", "ls -l"]
    assert inline_commands(quick) == ["curl localhost:9475/metrics", "vigil doctor"]


# --- the walk ------------------------------------------------------------------------------


@dataclass
class Copy:
    root: Path
    env: dict[str, str]
    port: int

    def vigil(self, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agent.cli", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def shell(self, command: str, **env: str) -> subprocess.CompletedProcess[str]:
        """A README command as the user's shell runs it, with the substitutions above."""
        command = command.replace("localhost:9475", f"localhost:{self.port}")
        argv = shlex.split(command)
        if argv[0] == "vigil":
            return self.vigil(argv[1:])
        return subprocess.run(
            command,
            shell=True,
            cwd=self.root,
            env=self.env | env,
            capture_output=True,
            text=True,
            timeout=300,
        )


def fresh_copy(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / os.fsdecode(name)
        if not src.is_file():  # deleted in the tree, not yet in the index
            continue
        target = dest / os.fsdecode(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return dest


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Copy]:
    """The copy, and its agent started as the quick start's ``make run`` starts it."""
    base = tmp_path_factory.mktemp("firsthour")
    root = fresh_copy(base / "vigil")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env |= {
        "VIGIL_LISTEN": f"127.0.0.1:{port}",
        "VIGIL_STATE_DIR": str(base / "state"),
        "VIGIL_DISCOVERY_INTERVAL": "1s",
        "PYTHONPATH": str(root),
    }
    copy = Copy(root, env, port)
    commands = shell_commands(section(README.read_text(), "Quick start"))
    assert commands[:2] == ["make run", "make test"], commands
    log = open(base / "agent.log", "w")  # noqa: SIM115
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", *QUICK],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_http_ready(
            f"http://127.0.0.1:{port}/readyz",
            agent,
            "vigil run",
            lambda: (base / "agent.log").read_text()[-3000:],
        )
        yield copy
    finally:
        stop_process(agent)
        log.close()
    assert "Traceback" not in (base / "agent.log").read_text()


def watched_pids(text: str) -> set[str]:
    return {
        s.labels["pid"]
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "vigil_watched_process_info"
    }


def test_quick_start_commands_work_as_written(walk: Copy) -> None:
    quick = section(README.read_text(), "Quick start")
    inline = inline_commands(quick)
    assert any(c.startswith("curl ") for c in inline), inline
    assert "vigil doctor" in inline, inline
    for command in inline:
        r = walk.shell(command)
        out = r.stdout + r.stderr
        assert "Traceback" not in out, (command, out)
        if command.startswith("curl "):
            assert r.returncode == 0, (command, out)
            assert "vigil_build_info" in r.stdout, command
        elif command == "vigil doctor":
            # Documented: 0 every check passed, 1 a line says FAIL; never a usage error.
            assert r.returncode in (0, 1), out
            assert "collectors" in r.stdout, out
            assert ("FAIL" in r.stdout) == (r.returncode == 1), out


def test_a_plain_sklearn_server_is_watched_without_watch(walk: Copy, tmp_path: Path) -> None:
    assert SERVERS_PY.exists(), f"{SERVERS_PY} missing: scripts/setup.sh installs it"
    (tmp_path / "serve.py").write_text(SERVE)
    serve = subprocess.Popen(
        [str(SERVERS_PY), "serve.py"],  # as typed: `python serve.py` in its directory
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert serve.stdout is not None
        line = serve.stdout.readline()
        assert line.strip() == "serving", line + serve.stdout.read()
        deadline = time.monotonic() + 60
        pids: set[str] = set()
        while str(serve.pid) not in pids and time.monotonic() < deadline:
            time.sleep(1)
            status, text = http_get(f"http://127.0.0.1:{walk.port}/metrics")
            assert status == 200
            pids = watched_pids(text)
        assert str(serve.pid) in pids, f"python serve.py (pid {serve.pid}) not watched: {pids}"
    finally:
        stop_process(serve)


def test_drift_section_from_reference_to_metrics(walk: Copy, tmp_path: Path) -> None:
    drift = section(README.read_text(), "`drift`")
    # The client goes into the model server's own environment, as the section says.
    (install,) = [c for c in shell_commands(drift) if c.startswith("pip install")]
    venv = tmp_path / "server-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=180)
    r = walk.shell(
        install,
        PATH=f"{venv / 'bin'}:{os.environ['PATH']}",
        PIP_NO_INDEX="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (example,) = code_blocks(drift, "python")
    model = re.search(r'model="([^"]+)"', example)
    version = re.search(r'version="([^"]+)"', example)
    features = re.findall(r'"(\w+)": [0-9.]+', example)
    assert model and version and features, example

    # A reference for the example's model and features, with the command the section names.
    assert "vigil drift reference set" in drift
    reference = tmp_path / "reference.csv"
    rows = [",".join(features)] + [
        ",".join(str(10.0 + i + j) for j in range(len(features))) for i in range(200)
    ]
    reference.write_text("\n".join(rows) + "\n")
    r = walk.vigil(
        [
            "drift",
            "reference",
            "set",
            "--model",
            model.group(1),
            "--version",
            version.group(1),
            str(reference),
        ]
    )
    assert r.returncode == 0, r.stdout + r.stderr

    # The section's five lines, sending far-off samples many times over, in the server's venv.
    body = example.replace("http://localhost:9475", f"http://localhost:{walk.port}")
    body = body.replace("drift.record(", "for _ in range(300):\n    drift.record(", 1)
    script = tmp_path / "send.py"
    script.write_text(body)
    r = subprocess.run(
        [str(venv / "bin" / "python"), str(script)],
        env=walk.env | {"PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr

    labels = {"model": model.group(1), "version": version.group(1)}
    deadline = time.monotonic() + 90  # the next check (every 30 s) after the window filled
    found: dict[str, float] = {}
    while "vigil_drift_ks_statistic" not in found and time.monotonic() < deadline:
        time.sleep(1)
        _, text = http_get(f"http://127.0.0.1:{walk.port}/metrics")
        found = {
            s.name: s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
            if s.name.startswith("vigil_drift_")
            and all(s.labels.get(k) == v for k, v in labels.items())
        }
    assert found.get("vigil_drift_samples_total", 0) >= 300, found
    assert "vigil_drift_ks_statistic" in found, found
