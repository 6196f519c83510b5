"""`vigil explain` and `vigil top`: the agent's diagnosis, read from ``GET /v1/diagnosis``.

  vigil explain                      every watched pod or process: verdict, evidence, advice
  vigil explain llama-7b             one pod (name, unique prefix or NAMESPACE/NAME)
  vigil explain 4242                 one process, by pid
  vigil explain --json               the agent's answer as is, for scripts
  vigil top                          the same, live, one row per pod or process

Both are clients of the running agent (``--agent URL``, default the address `vigil run`
listens on). ``/v1/diagnosis`` needs the agent's API token, found as the drift client finds
it (agent/drift/client.py): --token-file, $VIGIL_INGEST_TOKEN, $VIGIL_INGEST_TOKEN_FILE,
then ``ingest-token`` in the state directory.

  client.py   asking the agent, and the sentence for each way that fails
  report.py   the text report (pure functions over the JSON)
  top.py      the terminal view, imported only by `vigil top`: nothing else pays for its
              UI library
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from typing import Any

from agent.explain.client import Agent, DiagnosisError, UsageError, default_agent_url
from agent.explain.report import render_report, select_targets, severity_key

EXIT_OK = 0


EXPLAIN_EPILOG = """\
examples:
  vigil explain                       every watched pod or process, worst first
  vigil explain llama-7b-5f9c         one pod (or NAMESPACE/POD, or a unique prefix)
  vigil explain 4242                  one process, by pid
  vigil explain --json | jq '.targets[] | select(.status == "causes") | .pod'
  sudo vigil explain                  as root, the token of an agent run as root is found
  vigil explain --agent http://10.0.0.7:9475 --token-file ./token

each report: the verdict (one line per cause, warnings first), the evidence behind it
(signal, value, threshold, window), what to do with a runbook link (docs/diagnosis.md),
the hottest Python functions, then every signal measured and what could not be.

exit status: 0 report printed; 1 the agent could not be asked (down, refused the token,
no diagnosis) or does not watch POD|PID; 2 usage error.
"""

TOP_EPILOG = """\
keys:
  s / S     sort by the next / previous column     r   reverse the order
  /         filter (pod, process or cause); Enter keeps it, Escape clears it
  Enter     the whole report of the row (as `vigil explain` prints it); Escape goes back
  q         quit (Ctrl+C too)

examples:
  vigil top                           the local agent, refreshed every 2 s
  vigil top --interval 10             gentler on a busy node
  vigil top --agent http://10.0.0.7:9475 --token-file ./token

Columns that do not fit the terminal are left out, least telling first (80 columns keep
pod, cause, GPU, run queue and GIL). An agent that cannot be reached is shown on the
screen and asked again at every refresh.
"""


def _interval(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    # Faster than 0.5 s the view redraws faster than a person reads and the agent's
    # diagnosis does not change (it is recomputed on its own period).
    if not (math.isfinite(v) and 0.5 <= v <= 3600):
        raise argparse.ArgumentTypeError("the interval is between 0.5 and 3600 seconds")
    return v


def _target(value: str) -> str:
    # An empty name (`vigil explain ""`, an unset shell variable) would otherwise read as
    # "no target" and print every pod: a script asking about one pod gets them all.
    if not value.strip():
        raise argparse.ArgumentTypeError("empty; leave it out to see every pod or process")
    return value


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--agent",
        metavar="URL",
        default=default_agent_url(),
        help="the running agent (default from VIGIL_LISTEN, else %(default)s)",
    )
    p.add_argument(
        "--token-file",
        metavar="FILE",
        help="the agent's API token (default: env VIGIL_INGEST_TOKEN, VIGIL_INGEST_TOKEN_FILE, "
        "else <state-dir>/ingest-token, which the agent generates)",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the agent keeps its token (env VIGIL_STATE_DIR; default /var/lib/vigil "
        "as root, ./var otherwise)",
    )


def register(sub: Any) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    explain = sub.add_parser(
        "explain",
        help="why is this pod slow or wrong? the agent's verdict, evidence and advice",
        description="Ask the running agent why a pod or process is slow or wrong: the\n"
        "verdict, the evidence per signal with its numbers and window, what to do, and the\n"
        "hottest Python functions. Without POD|PID, every watched pod or process.",
        epilog=EXPLAIN_EPILOG,
        formatter_class=fmt,
    )
    explain.add_argument(
        "target", nargs="?", type=_target, metavar="POD|PID", help="a pod or a process id"
    )
    explain.add_argument("--json", action="store_true", help="print the agent's JSON answer")
    _client_args(explain)
    explain.set_defaults(func=_run(cmd_explain))

    top = sub.add_parser(
        "top",
        help="live view of every watched pod: cause, GPU, run queue, GIL, requests",
        description="A live terminal view of the agent's diagnosis, one row per watched pod\n"
        "or process: cause, GPU busy and memory, run-queue p99 and wait share, off-CPU and\n"
        "GIL shares, hottest function, drift, requests/s, error ratio and P95 latency.",
        epilog=TOP_EPILOG,
        formatter_class=fmt,
    )
    top.add_argument(
        "--interval",
        type=_interval,
        default=2.0,
        metavar="SECONDS",
        help="refresh period (default %(default)g)",
    )
    _client_args(top)
    top.set_defaults(func=_run(cmd_top))


def _run(fn: Any) -> Any:
    def wrapped(ns: argparse.Namespace, specs: Any) -> int:
        try:
            return int(fn(ns))
        except UsageError as exc:
            print(f"vigil {ns.command}: error: {exc}", file=sys.stderr)
            return exc.exit_code
        except DiagnosisError as exc:
            print(f"vigil {ns.command}: {exc}", file=sys.stderr)
            return exc.exit_code

    return wrapped


def cmd_explain(ns: argparse.Namespace) -> int:
    agent = Agent.from_args(ns.agent, ns.token_file, ns.state_dir)
    # The whole diagnosis, not ?pod=: an unknown name is then answered with the names the
    # agent does watch, and a unique prefix of a pod name is enough.
    doc = agent.diagnosis()
    targets = select_targets(doc["targets"], ns.target)
    if ns.json:
        if ns.target is not None:
            doc = {**doc, "targets": targets}
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    ordered = sorted(targets, key=severity_key)
    print(render_report(doc, ordered, agent.url, width=report_width()))
    return EXIT_OK


def cmd_top(ns: argparse.Namespace) -> int:
    agent = Agent.from_args(ns.agent, ns.token_file, ns.state_dir)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        # Without a terminal the view would draw escape codes into a file or a pipe.
        raise UsageError(
            "vigil top needs a terminal; in scripts use `vigil explain` or `vigil explain --json`"
        )
    from agent.explain.top import run_top  # the UI library only for this command

    return run_top(agent, ns.interval)


def report_width() -> int:
    """The terminal's width (80 when not a terminal), kept between 60 and 120: narrower
    breaks every line, wider makes lines too long to read."""
    return min(max(shutil.get_terminal_size((80, 24)).columns, 60), 120)
