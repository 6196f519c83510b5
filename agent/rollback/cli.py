"""`vigil rollback-controller`: the webhook that rolls models back.

Registered by agent/cli.py (``register(subparsers)``). Flags override the --config file;
the token comes from --token-file, VIGIL_ROLLBACK_TOKEN, the file's token_file/token, or
is generated once at <state-dir>/rollback-token.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from agent.config import ConfigError
from agent.log import setup_logging

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2

EPILOG = """\
examples:
  vigil rollback-controller --release-dir /srv/models/demo
      every firing alert labelled action="rollback" and model="demo" switches
      /srv/models/demo/current back to the previous healthy version (other models' and
      GPU alerts are answered and counted as no_target); the token Alertmanager needs
      is generated at <state-dir>/rollback-token
  vigil rollback-controller --config /etc/vigil/rollback.yaml --dry-run
      Kubernetes Deployments, commands, a policy: see docs/rollback.md

Alertmanager: alerts/alertmanager.yml routes action="rollback" to POST /v1/alerts.
Journal: GET /v1/rollbacks (bearer token). Metrics: GET /metrics.
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=36, width=100)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "rollback-controller",
        help="roll models back when Alertmanager says so (webhook on :9476)",
        description="Receive Alertmanager webhooks and roll back the targets the policy "
        "names: exactly once per alert, journaled before acting.",
        epilog=EPILOG,
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    p.add_argument("--config", metavar="FILE", help="YAML configuration (docs/rollback.md)")
    p.add_argument("--listen", metavar="HOST:PORT", help="webhook address (default :9476)")
    p.add_argument(
        "--release-dir",
        metavar="DIR",
        help='roll this release directory back on alerts with action="rollback" of its '
        "model (--model) not matched by the config's policy",
    )
    p.add_argument(
        "--model",
        metavar="NAME",
        help="the model label of the alerts that roll --release-dir back "
        "(default: the directory's name)",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="journal and generated token (default /var/lib/vigil as root, ./var otherwise)",
    )
    p.add_argument("--token-file", metavar="FILE", help="bearer token Alertmanager must send")
    p.add_argument(
        "--insecure-no-auth",
        action="store_true",
        default=None,
        help="accept webhooks without a token (only on a trusted loopback)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        default=None,
        help="decide and journal, but change nothing",
    )
    p.add_argument("--cooldown", metavar="DURATION", help="per target (default 10m)")
    p.add_argument("--max-per-hour", metavar="N", help="cap over all targets (default 6)")
    p.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="export rollback spans over OTLP/HTTP (e.g. http://collector:4318)",
    )
    p.add_argument(
        "--leader-election",
        choices=["auto", "on", "off"],
        default="auto",
        help="act only while holding a Kubernetes Lease (vigil-rollback-controller in "
        "$POD_NAMESPACE, held as $POD_NAME); auto: on when running in a cluster",
    )
    p.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="TLS and basic auth (Prometheus exporter-toolkit web configuration format)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="logfmt", choices=["logfmt", "json"])
    p.set_defaults(func=cmd_rollback_controller)


def cmd_rollback_controller(ns: argparse.Namespace, specs: Any = None) -> int:
    from agent.rollback import config as cfgmod
    from agent.rollback.controller import FAILPOINTS, Controller
    from agent.rollback.journal import Journal, JournalError
    from agent.rollback.server import ControllerServer, serve
    from agent.rollback.tracing import RollbackTracer, traces_url
    from agent.server import ListenError, parse_listen
    from agent.webconfig import load_web_config

    flags = {
        "listen": ns.listen,
        "release_dir": ns.release_dir,
        "model": ns.model,
        "state_dir": ns.state_dir,
        "token_file": ns.token_file,
        "insecure_no_auth": ns.insecure_no_auth,
        "dry_run": ns.dry_run,
        "cooldown": ns.cooldown,
        "max_per_hour": ns.max_per_hour,
        "otlp_endpoint": ns.otlp_endpoint,
        "web_config_file": ns.web_config_file,
    }
    cfg = cfgmod.load(file=ns.config, flags=flags)
    parse_listen(cfg.listen)
    if cfg.otlp_endpoint:
        try:
            traces_url(cfg.otlp_endpoint)
        except ValueError as exc:
            raise ConfigError(f"otlp_endpoint: {exc}") from None
    failpoint = os.environ.get("VIGIL_ROLLBACK_FAILPOINT") or None
    if failpoint and failpoint not in FAILPOINTS:
        raise ConfigError(f"VIGIL_ROLLBACK_FAILPOINT={failpoint!r}: one of {', '.join(FAILPOINTS)}")
    web_config = load_web_config(cfg.web_config_file) if cfg.web_config_file else None
    lock = _leader_lock(ns.leader_election, os.environ)
    # Usage errors are all above: from here on the process runs (and logs).
    setup_logging(ns.log_level, ns.log_format)
    generated = cfgmod.ensure_token(cfg)
    tracer = RollbackTracer(cfg.otlp_endpoint)
    try:
        journal = Journal(cfg.journal_path)
    except JournalError as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return EXIT_RUNTIME

    async def main() -> None:
        if lock is not None:
            lock.start()
        controller = Controller(
            cfg, journal, tracer, failpoint=failpoint, leader=lock.held if lock else None
        )
        server = ControllerServer(
            controller, cfg.listen, None if cfg.insecure_no_auth else cfg.token, web_config
        )
        info = {
            "listen": cfg.listen,
            "journal": str(cfg.journal_path),
            "token": "none (--insecure-no-auth)" if cfg.insecure_no_auth else cfg.token_source,
            "targets": ",".join(sorted(cfg.targets)),
            "release_dir_model": cfg.model or "none",
            "dry_run": cfg.dry_run,
            "otlp": cfg.otlp_endpoint or "off",
        }
        if generated:
            info["token_file"] = str(generated)
        await serve(controller, server, info)

    try:
        asyncio.run(main())
    except ListenError as exc:
        print(f"vigil: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    finally:
        if lock is not None:
            lock.close()
        tracer.close()
        journal.close()
    return EXIT_OK


LEASE_NAME = "vigil-rollback-controller"


def _leader_lock(mode: str, env: Any) -> Any:
    """The Lease lock for ``--leader-election``, or None where it is off."""
    in_cluster = bool(env.get("KUBERNETES_SERVICE_HOST"))
    if mode == "off" or (mode == "auto" and not in_cluster):
        return None
    namespace, identity = env.get("POD_NAMESPACE", ""), env.get("POD_NAME", "")
    if not namespace or not identity:
        raise ConfigError(
            "--leader-election needs POD_NAMESPACE and POD_NAME in the environment "
            "(set them from the downward API, as deploy/rollback-controller.yaml does)"
        )
    from agent.kube_lease import lease_lock

    try:
        return lease_lock(LEASE_NAME, namespace, identity)
    except Exception as exc:
        raise ConfigError(f"--leader-election: cannot reach the Kubernetes API: {exc}") from None
