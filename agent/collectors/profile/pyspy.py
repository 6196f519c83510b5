"""Finding, running and reaping py-spy.

A profile needs three recordings (see :func:`agent.collectors.profile.stacks.summarize_window`
for why three); the collector runs one per window, rotating the modes, so that a process
never has more than one ``py-spy record --nonblocking`` child at a time (docs/profile.md,
"Sampling scheme"). Children write raw collapsed stacks to files in a private directory;
their CPU time comes from ``wait4`` rusage; a child still running at window end + grace
is killed. Never blocking mode: pausing the target for every sample has stalled
multi-threaded PyTorch by 5-15x.

Nothing outlives the agent: children start under ``setpriv --pdeathsig KILL``
(:func:`die_with_parent`), and the private directory is named after its owner (pid and
start time), so that the next agent removes the directories of agents that were killed
before they could (:func:`make_workdir`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# The three recordings of a profile, in the order the collector rotates them: active
# stacks; every thread (with thread roots, so ticks can be counted); the GIL holder, idle
# or not. cpu first: the function shares are what most users look at.
MODES: dict[str, tuple[str, ...]] = {
    "cpu": (),
    "wall": ("--idle", "--threads"),
    "gil": ("--idle", "--gil"),
}

# py-spy needs up to ~0.5 s to attach (it retries three times) and writes a few KB when
# it exits; 3 s on top of the window covers a loaded node without letting a hung child
# hold its slot for long.
GRACE_S = 3.0

logger = logging.getLogger("vigil.profile")

# Private directories are "vigil-profile-<pid>.<start>-<random>": the owner's pid and its
# start time in clock ticks after boot (field 22 of /proc/<pid>/stat), so that a pid reused
# since (or after a reboot, /tmp being on disk on Debian) is not mistaken for the owner.
WORKDIR_PREFIX = "vigil-profile-"
_WORKDIR_NAME = re.compile(re.escape(WORKDIR_PREFIX) + r"(\d+)\.(\d+)-[A-Za-z0-9_]+")

# py-spy prints a Rust backtrace with every error when RUST_BACKTRACE is set; one line
# of reason is what we keep.
CHILD_ENV = {"RUST_BACKTRACE": "0", "RUST_LIB_BACKTRACE": "0"}


def find_pyspy(option: str = "") -> str | None:
    """The option when given; else py-spy next to this interpreter (the venv), then PATH."""
    if option:
        return option if os.access(option, os.X_OK) and os.path.isfile(option) else None
    beside = Path(sys.executable).parent / "py-spy"
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("py-spy")


def pyspy_version(path: str, timeout: float = 5.0) -> str:
    """``py-spy --version`` → "0.4.3"; raises OSError / ValueError when it cannot tell."""
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=timeout, check=False
        ).stdout
    except subprocess.TimeoutExpired:
        raise ValueError(f"{path} --version did not answer in {timeout:g}s") from None
    m = re.search(r"(\d+\.\d+\.\d+)", out)
    if not m:
        raise ValueError(f"{path} --version printed {out.strip()[:80]!r}, not a version")
    return m.group(1)


def record_argv(
    pyspy: str, pid: int, mode: str, rate: int, duration: int, output: str
) -> list[str]:
    return [
        pyspy,
        "record",
        "--nonblocking",
        "--format",
        "raw",
        # Per-function frames (the line is the def line): a function is one frame of the
        # flamegraph instead of one per line it executed, and metric labels stay few.
        "--function",
        "--rate",
        str(rate),
        "--duration",
        str(duration),
        "--pid",
        str(pid),
        "--output",
        output,
        *MODES[mode],
    ]


# What py-spy prints, mapped to what we do about it. Checked in order.
_OUTCOMES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("denied", re.compile(r"Permission Denied|Operation not permitted|EPERM", re.I)),
    (
        "exited",
        re.compile(
            r"process exited|process ended|No such process|"
            r"Check that the process is running",
            re.I,
        ),
    ),
    (
        "unsupported",
        re.compile(
            r"Failed to find python version|Unsupported version of Python|"
            r"Failed to find a python interpreter|not a python|"
            r"Failed to get python version|python_version",
            re.I,
        ),
    ),
)


def classify(returncode: int | None, output: str) -> str:
    """One child's exit → ok | exited | denied | unsupported | failed.

    py-spy exits 0 with "Stopped sampling because process exited" when the target dies
    mid-window, so the output is checked before the status.
    """
    for outcome, pattern in _OUTCOMES:
        if pattern.search(output):
            return outcome
    return "ok" if returncode == 0 else "failed"


def reason_line(output: str) -> str:
    """The line of py-spy's output that says what went wrong, for logs and the API."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith(("Error:", "Permission Denied", "thread 'main'")):
            return ln[:300]
    return lines[-1][:300] if lines else "py-spy exited without output"


@dataclass
class ChildResult:
    mode: str
    returncode: int | None  # None: killed at the deadline
    output: str
    text: str  # the recorded stacks ("" when none were written)
    cpu_seconds: float
    outcome: str = ""


@dataclass
class WindowRun:
    pid: int
    started: float  # wall clock (UNIX seconds)
    ended: float
    children: list[ChildResult] = field(default_factory=list)

    def outcome(self) -> str:
        """The window's result: the first non-ok outcome by severity, else ok."""
        got = {c.outcome for c in self.children}
        for o in ("stopped", "exited", "denied", "unsupported", "timeout", "failed"):
            if o in got:
                return o
        return "ok"

    def reason(self) -> str:
        for c in self.children:
            if c.outcome == "ok":
                continue
            if c.outcome == "timeout":
                return f"py-spy ({c.mode}) still running at window end + {GRACE_S:g}s; killed"
            if c.returncode is not None and c.returncode < 0:
                return f"py-spy ({c.mode}) killed by signal {-c.returncode}"
            return reason_line(c.output)
        return ""

    @property
    def cpu_seconds(self) -> float:
        return sum(c.cpu_seconds for c in self.children)

    def text(self, mode: str) -> str:
        return next((c.text for c in self.children if c.mode == mode), "")


class Runner:
    """Starts, waits for and reaps py-spy children; :meth:`close` kills those still running."""

    def __init__(
        self,
        pyspy: str,
        workdir: Path,
        grace: float = GRACE_S,
        which: Callable[[str], str | None] = shutil.which,
    ) -> None:
        self.pyspy = pyspy
        self.workdir = workdir
        self.grace = grace
        self._lock = threading.Lock()
        self._live: dict[int, subprocess.Popen[bytes]] = {}
        self._closed = False
        self._prefix = die_with_parent(which)

    def live_pids(self) -> list[int]:
        with self._lock:
            return list(self._live)

    def record_window(
        self, pid: int, rate: int, duration: int, modes: Sequence[str] = tuple(MODES)
    ) -> WindowRun:
        """Runs the recordings ``modes`` of one window side by side; blocks for about
        ``duration`` s."""
        run = WindowRun(pid=pid, started=time.time(), ended=0.0)
        started: list[tuple[str, subprocess.Popen[bytes], int, Path, Path]] = []
        env = {**os.environ, **CHILD_ENV}
        try:
            for mode in modes:
                out = self.workdir / f"{pid}-{mode}.txt"
                log = self.workdir / f"{pid}-{mode}.log"
                out.unlink(missing_ok=True)
                argv = record_argv(self.pyspy, pid, mode, rate, duration, str(out))
                with self._lock:
                    if self._closed:
                        break
                    try:
                        proc = _spawn(argv, log, env, self._prefix)
                    except OSError as exc:  # e.g. a pyspy-path that is not a binary
                        run.children.append(
                            ChildResult(
                                mode, None, f"cannot run {self.pyspy}: {exc}", "", 0.0, "failed"
                            )
                        )
                        break
                    try:
                        fd = os.pidfd_open(proc.pid)
                    except OSError as exc:  # e.g. EMFILE: out of file descriptors
                        unwatched: OSError | None = exc
                    else:
                        unwatched = None
                        self._live[proc.pid] = proc
                if unwatched is not None:
                    # Without a pidfd nothing would wait for or reap this child: kill it
                    # now (outside the lock; close() never saw it) rather than leak it.
                    _kill_and_reap(proc)
                    for p in (out, log):
                        p.unlink(missing_ok=True)
                    run.children.append(
                        ChildResult(
                            mode, None, f"cannot watch py-spy: {unwatched}", "", 0.0, "failed"
                        )
                    )
                    break
                started.append((mode, proc, fd, out, log))
            deadline = time.monotonic() + duration + self.grace
            self._wait(started, deadline)
        finally:
            for mode, proc, fd, out, log in started:
                run.children.append(self._reap(mode, proc, fd, out, log))
        run.ended = time.time()
        if self._closed:
            for c in run.children:
                c.outcome = "stopped"
        return run

    def _wait(
        self,
        started: Sequence[tuple[str, subprocess.Popen[bytes], int, Path, Path]],
        deadline: float,
    ) -> None:
        poller = select.poll()
        pending = {fd for _, _, fd, _, _ in started}
        for fd in pending:
            poller.register(fd, select.POLLIN)
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for fd, _ in poller.poll(left * 1000):
                poller.unregister(fd)
                pending.discard(fd)

    def _reap(
        self, mode: str, proc: subprocess.Popen[bytes], fd: int, out: Path, log: Path
    ) -> ChildResult:
        timed_out = False
        try:
            waited, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if waited == 0:
                timed_out = True
                os.kill(proc.pid, signal.SIGKILL)
                waited, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            os.close(fd)
            with self._lock:
                self._live.pop(proc.pid, None)
        output = _read(log)
        text = "" if timed_out else _read(out)
        for p in (out, log):
            p.unlink(missing_ok=True)
        result = ChildResult(
            mode=mode,
            returncode=None if timed_out else proc.returncode,
            output=output,
            text=text,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
        )
        result.outcome = "timeout" if timed_out else classify(proc.returncode, output)
        return result

    def close(self) -> None:
        """Kills every live child; the threads waiting on them reap them."""
        with self._lock:
            self._closed = True
            live = list(self._live.values())
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)


def _kill_and_reap(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    _, status, _ = os.wait4(proc.pid, 0)
    # Tells Popen the child is reaped, so that it never waits on a pid reused since.
    proc.returncode = os.waitstatus_to_exitcode(status)


def _spawn(
    argv: list[str], log: Path, env: dict[str, str], prefix: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    if prefix:
        can_exec(argv[0])
    with open(log, "wb") as logf:
        return subprocess.Popen(
            [*prefix, *argv],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=env,
            close_fds=True,
            # Out of the agent's process group: a Ctrl-C or a group-wide SIGTERM reaches
            # the agent, which then reaps its children.
            start_new_session=True,
        )


def can_exec(path: str) -> None:
    """Raises the OSError execve(2) would for ``path`` (ENOENT, EACCES, ENOEXEC).

    Behind setpriv the exec is its execvp(3), which runs a file of no executable format
    with /bin/sh instead of failing: a pyspy-path naming a text file would be run as a
    shell script. py-spy is an ELF binary; a script (#!) is let through too.
    """
    with open(path, "rb") as f:
        magic = f.read(4)
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    if not magic.startswith((b"\x7fELF", b"#!")):
        raise OSError(errno.ENOEXEC, os.strerror(errno.ENOEXEC), path)


def die_with_parent(which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """The argv prefix that has the kernel SIGKILL the child when the agent dies:
    ``setpriv --pdeathsig KILL --`` (util-linux, Essential on Debian), or ``[]`` without it.

    Without it a SIGKILLed (or OOM-killed) agent leaves its py-spy children reparented to
    init, attached to their targets until their own --duration ends. Not a ``preexec_fn``:
    Python code between fork and exec in this many-threaded process can deadlock on a
    lock another thread held at the fork. setpriv sets the signal in the child and execs
    py-spy in the same process, so the pid the agent waits on (and reaps, and kills at
    close) is py-spy's. The signal follows the thread that forked the child:
    :meth:`Runner.record_window` reaps its children before its thread can end, so only the
    agent's death delivers it. Should the agent die after the fork but before setpriv
    armed the child, no signal comes; that child is bounded all the same, since every
    recording has a --duration and ends by itself at the window's end.
    """
    path = which("setpriv")
    if path is None:
        logger.warning(
            "setpriv not found: py-spy children would outlive a killed agent until their "
            "window ends",
            extra={"collector": "profile", "fix": "install util-linux"},
        )
        return []
    return [path, "--pdeathsig", "KILL", "--"]


def parse_workdir_name(name: str) -> tuple[int, int] | None:
    """``vigil-profile-<pid>.<start>-<random>`` → (pid, start ticks); None for other names."""
    m = _WORKDIR_NAME.fullmatch(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def parse_start_ticks(stat_text: str) -> int:
    """Field 22 (starttime) of a /proc/<pid>/stat line; raises ValueError when malformed.

    The command name (field 2) is in parentheses and may itself hold spaces and ")", so
    fields are counted from the last ")".
    """
    end = stat_text.rfind(")")
    fields = stat_text[end + 2 :].split() if end >= 0 else []
    if len(fields) < 20:
        raise ValueError(f"not a /proc/<pid>/stat line: {stat_text[:80]!r}")
    return int(fields[19])  # fields[0] is field 3


def start_ticks(pid: int, proc: Path = Path("/proc")) -> int | None:
    """When ``pid`` started (clock ticks after boot); None when no such process runs.

    Raises OSError / ValueError when it cannot tell (the caller then keeps the directory).
    """
    try:
        text = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return parse_start_ticks(text)


def is_stale(name: str, started: Callable[[int], int | None]) -> bool:
    """Whether ``name`` is a private directory whose owning agent no longer runs."""
    owner = parse_workdir_name(name)
    if owner is None:
        return False
    pid, ticks = owner
    return started(pid) != ticks


def clean_stale_workdirs(root: Path, proc: Path = Path("/proc")) -> list[Path]:
    """Removes what killed agents left in ``root``; returns what was removed.

    Only directories with this module's name pattern, owned by this user, not symlinks,
    whose owner is gone; anything unsure (an unreadable /proc entry) is kept.
    """

    def started(pid: int) -> int | None:
        return start_ticks(pid, proc)

    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError as exc:
        logger.warning("cannot list temp dir", extra={"path": str(root), "error": str(exc)})
        return removed
    for entry in entries:
        if not entry.name.startswith(WORKDIR_PREFIX):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                continue
            if not is_stale(entry.name, started):
                continue
            shutil.rmtree(entry.path)
        except (OSError, ValueError) as exc:
            logger.warning(
                "cannot remove stale profile dir",
                extra={"path": entry.path, "error": str(exc)},
            )
            continue
        removed.append(Path(entry.path))
    return removed


def make_workdir(root: Path | None = None, proc: Path = Path("/proc")) -> Path:
    """Removes stale private directories in ``root`` (default: the temp dir), then makes
    this agent's own, mode 0700."""
    root = Path(root or tempfile.gettempdir())
    removed = clean_stale_workdirs(root, proc)
    if removed:
        logger.info(
            "removed profile dirs of agents no longer running",
            extra={"count": len(removed), "paths": [str(p) for p in removed]},
        )
    me = os.getpid()
    ticks = start_ticks(me, proc)
    prefix = f"{WORKDIR_PREFIX}{me}.{ticks if ticks is not None else 0}-"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
