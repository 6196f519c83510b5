"""A real terminal for tests: a command in a detached tmux session of a given size, keys
sent with ``send-keys``, the screen read with ``capture-pane``. Each Screen has its own tmux
server (``-S``), so tests never see each other's sessions or a user's. Below it, `vigil top`
in such a terminal and the reading of its table off the screen."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agentproc import ROOT
from fakeagent import TOKEN

# Generous: a Textual app starts in about a second on an idle machine, several on a
# loaded two-core one.
WAIT_S = 60.0


class Screen:
    def __init__(
        self,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        tmp: Path,
        width: int = 80,
        height: int = 24,
    ) -> None:
        if shutil.which("tmux") is None:
            raise RuntimeError("tmux is not installed (scripts/setup.sh installs it)")
        # A server of its own, on a socket in a directory of its own (short: a socket path
        # has at most 107 bytes), removed on close: nothing is left in tmux's shared one.
        self.dir = Path(tempfile.mkdtemp(prefix="vigil-tmux-"))
        self.socket = str(self.dir / "s")
        self.exit_file = tmp / f"{self.dir.name}.exit"
        # The exit status goes to a file; the pane stays open a moment after the program
        # ends so that a last capture still works.
        inner = " ".join(
            [
                "env",
                *(shlex.quote(f"{k}={v}") for k, v in env.items()),
                *(shlex.quote(a) for a in argv),
            ]
        )
        script = f"{inner}; echo $? > {shlex.quote(str(self.exit_file))}; sleep 5"
        self._tmux(
            "new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height), "-c",
            str(cwd), script,
        )  # fmt: skip

    def _tmux(self, *args: str) -> str:
        out = subprocess.run(
            ["tmux", "-S", self.socket, "-f", os.devnull, *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if out.returncode != 0:
            raise RuntimeError(f"tmux {args[0]}: {out.stderr.strip()}")
        return out.stdout

    def text(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "t")

    def lines(self) -> list[str]:
        return self.text().splitlines()

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "t", *keys)

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", "t", "-l", text)

    def wait_for(self, what: str, ok: Callable[[str], bool], timeout: float = WAIT_S) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.text()
            if ok(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"screen never showed {what}:\n{screen}")
            time.sleep(0.2)

    def exit_status(self, timeout: float = WAIT_S) -> int:
        deadline = time.monotonic() + timeout
        while not self.exit_file.exists() or not self.exit_file.read_text().strip():
            if time.monotonic() > deadline:
                raise AssertionError(f"the program did not exit:\n{self.text()}")
            time.sleep(0.1)
        return int(self.exit_file.read_text())

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Screen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rows(screen: str) -> list[str]:
    """The first cell of each table row: the lines between the header and the footer."""
    lines = screen.splitlines()
    head = next((i for i, ln in enumerate(lines) if re.match(r"\s*POD\s", ln)), None)
    if head is None:
        return []
    out = []
    for ln in lines[head + 1 :]:
        cells = re.split(r"\s{2,}", ln.strip())
        if not cells[0] or not re.match(r"^(pid \d+|[\w.-]+/)", cells[0]):
            break
        out.append(cells[0])
    return out


def header(screen: str) -> str:
    return next(ln for ln in screen.splitlines() if re.match(r"\s*POD\s", ln))


def top(
    url: str,
    tmp: Path,
    token: str | None = TOKEN,
    term: str = "xterm-256color",
    width: int = 80,
    args: tuple[str, ...] = (),
) -> Screen:
    """`vigil top` asking ``url`` every second, in a ``width`` x 24 terminal."""
    env = {"TERM": term, "VIGIL_STATE_DIR": str(tmp / "state"), "LANG": "C.UTF-8"}
    if token:
        env["VIGIL_INGEST_TOKEN"] = token
    argv = [sys.executable, "-m", "agent.cli", "top", "--agent", url, "--interval", "1", *args]
    return Screen(argv, ROOT, env, tmp, width=width)
