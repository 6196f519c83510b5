"""The `vigil` command.

  vigil run        the node agent (metrics on :9475)
  vigil doctor     can each collector run here? what fixes it?
  vigil explain    why is this pod slow or wrong? (asks the running agent)
  vigil top        the same, live, one row per watched pod
  vigil version    print the version

Settings come from defaults < --config FILE < VIGIL_* environment < flags; see
agent/config.py for how each key is spelled in each place.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from agent import __version__
from agent.collectors import SPECS
from agent.config import (
    AGENT_FIELDS,
    Config,
    ConfigError,
    collector_fields,
    from_env,
    load_yaml,
    resolve,
)
from agent.log import setup_logging
from agent.options import Field
from agent.registry import CollectorSpec

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2

RUN_EPILOG = """\
examples:
  vigil run                                   all collectors, metrics on :9475
  vigil run --listen 127.0.0.1:9475 --watch 'python.*serve\\.py'
  vigil run --no-collector.profile --collector.gpu.interval 10s
  VIGIL_COLLECTOR_SCHED=false vigil run --config /etc/vigil/config.yaml

then: curl localhost:9475/metrics   (readiness: /readyz, liveness: /healthz)
`vigil doctor` tells which collectors can run on this host and how to fix those that cannot.
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=40, width=100)


def _metavar(f: Field) -> str:
    if f.metavar:
        return f.metavar
    return {"int": "N", "float": "X", "duration": "DURATION", "list": "REGEX"}.get(
        f.type, "|".join(f.choices) if f.choices else "VALUE"
    )


def _default_text(f: Field) -> str:
    if f.key == "watch":
        return "Python inference servers"
    if f.default in (None, "", []):
        return ""
    if f.type == "duration":
        return f" (default {f.default:g}s)"
    if f.type == "bool":
        return f" (default {'on' if f.default else 'off'})"
    return f" (default {f.default})"


def _add_field(group: argparse._ArgumentGroup, f: Field) -> None:
    text = f.help + ("" if f.key == "watch" else _default_text(f))
    if f.type == "bool":
        group.add_argument(
            f.flag,
            dest=f.key,
            action="store_const",
            const=True,
            default=argparse.SUPPRESS,
            help=text,
        )
        neg = "--no-" + f.key
        group.add_argument(
            neg,
            dest=f.key,
            action="store_const",
            const=False,
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
        )
        return
    kwargs: dict[str, Any] = {
        "dest": f.key,
        "default": argparse.SUPPRESS,
        "help": text,
        "metavar": _metavar(f),
    }
    if f.type == "list":
        kwargs["action"] = "append"
    group.add_argument(f.flag, **kwargs)


def add_config_flags(parser: argparse.ArgumentParser, specs: Sequence[CollectorSpec]) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=os.environ.get("VIGIL_CONFIG"),
        help="YAML config file (keys as in docs/configuration.md; env VIGIL_CONFIG)",
    )
    general = parser.add_argument_group("agent")
    for f in AGENT_FIELDS:
        _add_field(general, f)
    for spec in specs:
        group = parser.add_argument_group(
            f"collector {spec.name}",
            f"{spec.help}. Switch with --collector.{spec.name} / --no-collector.{spec.name}",
        )
        for f in collector_fields(spec):
            _add_field(group, f)


_COLLECTOR_FLAG = re.compile(r"^--(?:no-)?collector\.([^.=]+)")


def check_collector_flags(argv: Sequence[str], specs: Sequence[CollectorSpec]) -> None:
    """Names an unknown collector before argparse says 'unrecognized arguments'."""
    names = [s.name for s in specs]
    for arg in argv:
        m = _COLLECTOR_FLAG.match(arg)
        if m and m.group(1) not in names:
            raise ConfigError(
                f"unknown collector {m.group(1)!r} in {arg.split('=')[0]} "
                f"(known: {', '.join(names)})"
            )


def build_config(
    ns: argparse.Namespace, specs: Sequence[CollectorSpec], env: dict[str, str] | None = None
) -> Config:
    env = dict(os.environ) if env is None else env
    fields = {f.key for f in AGENT_FIELDS} | {f.key for s in specs for f in collector_fields(s)}
    flags = {k: v for k, v in vars(ns).items() if k in fields}
    yaml_values = load_yaml(ns.config, specs) if getattr(ns, "config", None) else {}
    return resolve(
        specs,
        yaml_values=yaml_values,
        yaml_source=f"config file {ns.config}" if getattr(ns, "config", None) else "config file",
        env_values=from_env(env, specs),
        flag_values=flags,
    )


def cmd_run(ns: argparse.Namespace, specs: Sequence[CollectorSpec]) -> int:
    from agent.app import Agent
    from agent.server import ListenError, parse_listen

    config = build_config(ns, specs)
    parse_listen(config.listen)  # a bad address is a usage error, before anything starts
    setup_logging(config.get("log.level"), config.get("log.format"))
    agent = Agent(config, specs)
    try:
        asyncio.run(agent.run_until_signalled())
    except ListenError as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK


def cmd_doctor(ns: argparse.Namespace, specs: Sequence[CollectorSpec]) -> int:
    from agent.doctor import run_doctor
    from agent.server import parse_listen

    config = build_config(ns, specs)
    parse_listen(config.listen)  # the same usage error `vigil run` would give
    return run_doctor(config, specs, sys.stdout)


def cmd_version(ns: argparse.Namespace, specs: Sequence[CollectorSpec]) -> int:
    print(f"vigil {__version__}")
    return EXIT_OK


Command = Callable[[argparse.Namespace, Sequence[CollectorSpec]], int]


def build_parser(specs: Sequence[CollectorSpec] = SPECS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigil",
        formatter_class=_HelpFormatter,
        description="Vigil: a host agent for GPU inference nodes. It measures, per process "
        "and per pod, CPU scheduling (eBPF), GPU use (NVML), Python stacks (py-spy) and "
        "input drift (KS tests), and exports them as Prometheus metrics.",
        epilog="Start with `vigil doctor`, then `vigil run`. `vigil COMMAND --help` for more.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"vigil {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the node agent (metrics on :9475)",
        description="Run the node agent in the foreground until SIGTERM/SIGINT.",
        epilog=RUN_EPILOG,
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
    )
    add_config_flags(run, specs)
    run.set_defaults(func=cmd_run)

    doctor = sub.add_parser(
        "doctor",
        help="check which collectors can run here and how to fix the others",
        description="For each collector: ready, or not ready with the precise reason and the "
        "command that fixes it; then the Python processes on this host, which ones `vigil "
        "run` would watch and, for the others, why not and the --watch that would match. "
        "Takes the same settings as `vigil run`.",
        epilog="exit status: 0 every check passed; 1 a line says FAIL; 2 usage error (a bad "
        "flag or setting).",
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
    )
    add_config_flags(doctor, specs)
    doctor.set_defaults(func=cmd_doctor)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=cmd_version)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list[Callable[[Any], None]]:
    """Subcommands that live with their component (explain and top, drift, rollback-controller)."""
    out: list[Callable[[Any], None]] = []
    for module in ("agent.explain", "agent.drift.cli", "agent.rollback.cli"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue
            raise
        out.append(mod.register)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(SPECS)
    try:
        check_collector_flags(args, SPECS)
        ns = parser.parse_args(args)
        if not getattr(ns, "func", None):
            parser.print_help()
            return EXIT_USAGE
        return int(ns.func(ns, SPECS))
    except ConfigError as exc:
        print(f"vigil: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # A bug, not bad input: one line for the user; the traceback on request.
        if os.environ.get("VIGIL_DEBUG"):
            raise
        print(
            f"vigil: unexpected error: {type(exc).__name__}: {exc} "
            "(set VIGIL_DEBUG=1 for the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
