"""Every `curl` example in README.md and docs/*.md works with the machine's own curl
(Debian 12: 7.88, which refuses a bare ``:9475/...`` as "URL using bad/illegal format"):
the examples are taken from the documents themselves and run against a real agent."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from agentproc import ROOT, AgentProcess

pytestmark = pytest.mark.slow

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
AGENT_PORT = "9475"  # the agent's documented port; examples on others need other servers
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"(?<!`)`(curl [^`\n]+)`(?!`)")


def curl_commands(markdown: str) -> list[str]:
    """The shell commands that start with ``curl`` in a Markdown text: lines of fenced
    blocks (backslash continuations joined, a ``$ `` prompt dropped) and inline code."""
    out = []
    for block in FENCE.findall(markdown):
        joined = re.sub(r"\s*\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("curl "):
                out.append(line)
    out.extend(INLINE.findall(FENCE.sub("", markdown)))
    return out


def test_curl_commands_are_found_in_fences_inline_and_continued_lines() -> None:
    text = (
        "Then `curl localhost:9475/metrics`.\n\n```sh\n# a comment\n"
        "curl -s localhost:9475/a -H 'X: y' \\\n     -d '{}'\n$ curl -s localhost:9475/b\n"
        "vigil run\n```\n"
    )
    assert curl_commands(text) == [
        "curl -s localhost:9475/a -H 'X: y' -d '{}'",
        "curl -s localhost:9475/b",
        "curl localhost:9475/metrics",
    ]


def all_commands() -> list[tuple[str, str]]:
    return [(p.name, c) for p in DOCS for c in curl_commands(p.read_text())]


def test_no_example_uses_a_url_without_a_host() -> None:
    bare = []
    for doc, cmd in all_commands():
        words = shlex.split(cmd, comments=True)
        bare += [(doc, cmd) for w in words[1:] if re.match(r"^:\d+", w)]
    assert not bare, bare


def test_every_agent_curl_example_runs_against_a_real_agent(tmp_path: Path) -> None:
    runnable = [(d, c) for d, c in all_commands() if re.search(rf"(?<!\d){AGENT_PORT}\b", c)]
    docs_with_examples = {d for d, _ in runnable}
    assert {"README.md", "drift.md", "profile.md"} <= docs_with_examples, runnable
    state = tmp_path / "var"  # ./var, as the examples' token paths expect
    with AgentProcess(
        ["--no-collector.sched", "--no-collector.gpu", "--state-dir", str(state)]
    ) as a:
        rcs = tmp_path / "curl-exit-codes"
        # -S: curl's own error even where the example says -s (silent hides it).
        wrapper = 'curl() { command curl -S "$@"; local rc=$?; echo "$rc" >> "$RCS"; return $rc; }'
        failures = []
        for doc, cmd in runnable:
            rcs.write_text("")
            local = re.sub(rf"(?<!\d){AGENT_PORT}\b", str(a.port), cmd)
            r = subprocess.run(
                ["bash", "-c", f"{wrapper}\n{local}"],
                cwd=tmp_path,
                env={**os.environ, "RCS": str(rcs)},
                capture_output=True,
                text=True,
                timeout=60,
            )
            codes = rcs.read_text().split()
            if codes != ["0"] or "bad/illegal format" in r.stderr:
                failures.append((doc, cmd, codes, r.stderr[-300:]))
    assert not failures, failures
