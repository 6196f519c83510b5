"""The controller's configuration: defaults < YAML file < VIGIL_ROLLBACK_TOKEN < flags.

A complete file (every key optional; ``--release-dir DIR`` alone is a whole configuration,
acting on the alerts of the model named like the directory, or ``--model NAME``)::

    listen: ":9476"
    token_file: /etc/vigil/rollback-token     # or token: "..."; env VIGIL_ROLLBACK_TOKEN
    state_dir: /var/lib/vigil                 # journal: <state_dir>/rollback-journal.db
    dry_run: false
    cooldown: 10m                             # per target
    max_per_hour: 6                           # all targets together
    otlp_endpoint: http://otel-collector:4318
    targets:
      models:   {action: release_dir, path: "/srv/models/{model}"}
      llm:      {action: kubernetes, namespace: "{namespace}", deployment: "{workload}",
                 allowed_namespaces: [inference]}
      served:   {action: kubernetes_workload, namespace: "{namespace}",
                 workload_kind: "{workload_kind}", workload: "{workload}",   # or pod: "{pod}"
                 allowed_namespaces: [inference],
                 kinds: [Deployment, Rollout, StatefulSet, InferenceService],
                 allow_partitioned: false, history_interval: 30s}
      notify:   {action: command, argv: [/usr/local/bin/page-team], timeout: 30s}
    policy:                                   # first match wins; action="rollback" only
      - {match: {workload_kind: Deployment}, target: llm}
      - {match_re: {model: ".+"}, target: models}

Every error names the key and the file, and is a usage error (exit 2) before anything
starts. Booleans are YAML booleans: ``dry_run: "false"`` (a string) is an error, never
read as true.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent import auth
from agent.config import ConfigError, default_state_dir, parse_duration
from agent.rollback.actions.command import env_name_problem
from agent.rollback.actions.owners import KINDS as WORKLOAD_KINDS
from agent.rollback.policy import SAFE_VALUE, Rule, TargetSpec, placeholders

DEFAULT_LISTEN = ":9476"
# Ten minutes: long enough for a rolled-back version to be loaded, warmed up and judged by
# the same alert again (drift's `for` is 5m), short enough to act twice in one bad hour.
DEFAULT_COOLDOWN = 600.0
# Six an hour across all targets: a fleet-wide cause (bad reference data, a broken
# exporter) must not walk every model back through its whole history.
DEFAULT_MAX_PER_HOUR = 6
JOURNAL_NAME = "rollback-journal.db"
TOKEN_NAME = "rollback-token"
TOKEN_ENV = "VIGIL_ROLLBACK_TOKEN"

TOP_KEYS = {
    "listen", "token", "token_file", "insecure_no_auth", "state_dir", "journal", "dry_run",
    "cooldown", "max_per_hour", "otlp_endpoint", "targets", "policy", "release_dir", "model",
    "web_config_file",
}  # fmt: skip
TARGET_KEYS = {
    "release_dir": ({"path"}, {"version_label"}),
    "kubernetes": ({"namespace", "deployment", "allowed_namespaces"}, {"kubeconfig", "context"}),
    "kubernetes_workload": (
        {"namespace", "allowed_namespaces"},
        {"pod", "workload_kind", "workload"}
        | {"kinds", "allow_partitioned", "history_interval", "kubeconfig", "context"},
    ),
    "command": ({"argv"}, {"timeout", "env"}),
}
RELEASE_DIR_TARGET = "release-dir"


@dataclass
class ControllerConfig:
    listen: str = DEFAULT_LISTEN
    token: str | None = None
    token_source: str = ""
    insecure_no_auth: bool = False
    state_dir: Path = field(default_factory=lambda: Path(default_state_dir()))
    journal: Path | None = None
    dry_run: bool = False
    cooldown: float = DEFAULT_COOLDOWN
    max_per_hour: int = DEFAULT_MAX_PER_HOUR
    otlp_endpoint: str | None = None
    web_config_file: str | None = None  # TLS, basic auth: exporter-toolkit format
    targets: dict[str, TargetSpec] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    # The model the --release-dir directory serves: only its alerts roll it back.
    model: str | None = None

    @property
    def journal_path(self) -> Path:
        return self.journal or self.state_dir / JOURNAL_NAME


def _fail(where: str, why: str) -> ConfigError:
    return ConfigError(f"{where}: {why}")


def _duration(value: Any, where: str) -> float:
    try:
        seconds = parse_duration(str(value))
    except ValueError as exc:
        raise _fail(where, str(exc)) from None
    return seconds


def _bool(value: Any, where: str) -> bool:
    """A YAML boolean, nothing else: a quoted "false" is a non-empty string, which Python
    would call true, so a typo there must stop the start rather than turn a safety off."""
    if isinstance(value, bool):
        return value
    raise _fail(where, f"{value!r} is not a boolean; write true or false, without quotes")


def _namespaces(value: Any, where: str) -> list[str]:
    if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        raise _fail(where, "expected a non-empty list of namespace names")
    for ns in value:
        if placeholders(ns) or not SAFE_VALUE.fullmatch(ns):
            raise _fail(where, f"{ns!r} is not a namespace name (no {{label}} here)")
    return list(value)


WORKLOAD_OPTIONS = {"kinds", "allow_partitioned", "history_interval"}
# How often the InferenceServices' specs are read for their history, by default: a change
# that lasts less than this may go unrecorded (docs/rollback.md says so); the list is one
# request per namespace.
DEFAULT_HISTORY_INTERVAL = 30.0
# Below a second the polling would be load on the API server for no gain.
MIN_HISTORY_INTERVAL = 1.0


def _workload_options(params: dict[str, Any], where: str) -> None:
    kinds = params.get("kinds", list(WORKLOAD_KINDS))
    if not (isinstance(kinds, list) and kinds and all(isinstance(k, str) for k in kinds)):
        raise _fail(f"{where}.kinds", f"expected a non-empty list of {', '.join(WORKLOAD_KINDS)}")
    unknown = [k for k in kinds if k not in WORKLOAD_KINDS]
    if unknown:
        raise _fail(
            f"{where}.kinds",
            f"{', '.join(map(repr, unknown))} not one of {', '.join(WORKLOAD_KINDS)}",
        )
    params["kinds"] = list(dict.fromkeys(kinds))
    params["allow_partitioned"] = _bool(
        params.get("allow_partitioned", False), f"{where}.allow_partitioned"
    )
    interval = _duration(
        params.get("history_interval", f"{DEFAULT_HISTORY_INTERVAL:g}s"),
        f"{where}.history_interval",
    )
    if interval < MIN_HISTORY_INTERVAL:
        raise _fail(f"{where}.history_interval", f"at least {MIN_HISTORY_INTERVAL:g}s")
    params["history_interval"] = interval


def parse_target(name: str, raw: Any, where: str) -> TargetSpec:
    if not isinstance(raw, dict):
        raise _fail(where, "expected a mapping with an `action`")
    action = raw.get("action")
    if action not in TARGET_KEYS:
        raise _fail(f"{where}.action", f"{action!r} is not one of {', '.join(TARGET_KEYS)}")
    required, optional = TARGET_KEYS[action]
    params = {k: v for k, v in raw.items() if k != "action"}
    unknown = set(params) - required - optional
    if unknown:
        raise _fail(where, f"unknown key(s) {', '.join(sorted(unknown))} for action {action}")
    missing = required - set(params)
    if missing:
        raise _fail(where, f"action {action} needs {', '.join(sorted(missing))}")
    if action == "command":
        argv = params["argv"]
        if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
            raise _fail(f"{where}.argv", "expected a non-empty list of strings (no shell is used)")
        if placeholders(argv):
            raise _fail(f"{where}.argv", "labels reach a command as environment, not as {label}")
        if "timeout" in params:
            params["timeout"] = _duration(params["timeout"], f"{where}.timeout")
        env = params.get("env", {})
        if not isinstance(env, dict):
            raise _fail(f"{where}.env", "expected a mapping of NAME: value")
        for key, value in env.items():
            problem = env_name_problem(str(key))
            if problem or "\0" in str(value):
                raise _fail(f"{where}.env.{key}", problem or "a value cannot hold a NUL byte")
    else:
        if action in ("kubernetes", "kubernetes_workload"):
            params["allowed_namespaces"] = _namespaces(
                params.pop("allowed_namespaces"), f"{where}.allowed_namespaces"
            )
            required = required - {"allowed_namespaces"}
        if action == "kubernetes_workload":
            _workload_options(params, where)
            optional = optional - WORKLOAD_OPTIONS
            named = {k for k in ("pod", "workload_kind", "workload") if k in params}
            if named not in ({"pod"}, {"workload_kind", "workload"}):
                raise _fail(
                    where,
                    "action kubernetes_workload needs pod, or workload_kind and workload "
                    "(the alert labels its owner is found from)",
                )
        for key in required | (optional & set(params)):
            if not isinstance(params[key], str) or not params[key]:
                raise _fail(f"{where}.{key}", "expected a non-empty string")
    return TargetSpec(name, action, params)


def parse_rule(raw: Any, where: str, targets: dict[str, TargetSpec]) -> Rule:
    if not isinstance(raw, dict) or set(raw) - {"match", "match_re", "target"}:
        raise _fail(where, "expected {target: NAME, match: {...}, match_re: {...}}")
    target = raw.get("target")
    if target not in targets:
        raise _fail(
            f"{where}.target",
            f"{target!r} is not a configured target ({', '.join(targets) or 'none'})",
        )
    match = raw.get("match") or {}
    match_re = raw.get("match_re") or {}
    if not isinstance(match, dict) or not isinstance(match_re, dict):
        raise _fail(where, "match and match_re are mappings of label: value")
    compiled = {}
    for label, pattern in match_re.items():
        try:
            compiled[str(label)] = re.compile(str(pattern))
        except re.error as exc:
            raise _fail(f"{where}.match_re.{label}", f"bad regular expression: {exc}") from None
    return Rule(target, {str(k): str(v) for k, v in match.items()}, compiled)


def read_token_file(path: str, source: str) -> str:
    """The token in ``path``, if nobody but this process's user (or root) could have
    written or read it (agent/auth.py); a usage error naming the file and the fix if not."""
    try:
        return auth.read_token_file(path)
    except auth.TokenError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load(
    *,
    file: str | None = None,
    flags: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> ControllerConfig:
    """Builds the configuration; ``flags`` holds only the flags given on the command line."""
    flags = flags or {}
    env = dict(os.environ) if env is None else env
    raw: dict[str, Any] = {}
    source = "config"
    if file:
        source = f"config file {file}"
        try:
            raw = yaml.safe_load(Path(file).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping at the top level")
        unknown = set(raw) - TOP_KEYS
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}")
    merged = {**raw, **{k: v for k, v in flags.items() if v is not None}}

    cfg = ControllerConfig()
    cfg.listen = str(merged.get("listen", DEFAULT_LISTEN))
    cfg.insecure_no_auth = _bool(
        merged.get("insecure_no_auth", False), f"{source}: insecure_no_auth"
    )
    cfg.dry_run = _bool(merged.get("dry_run", False), f"{source}: dry_run")
    if merged.get("state_dir"):
        cfg.state_dir = Path(str(merged["state_dir"]))
    if merged.get("journal"):
        cfg.journal = Path(str(merged["journal"]))
    if "cooldown" in merged:
        cfg.cooldown = _duration(merged["cooldown"], f"{source}: cooldown")
    if "max_per_hour" in merged:
        try:
            cfg.max_per_hour = int(merged["max_per_hour"])
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: max_per_hour: expected a whole number") from None
        if cfg.max_per_hour < 1:
            raise ConfigError(f"{source}: max_per_hour must be at least 1")
    cfg.otlp_endpoint = merged.get("otlp_endpoint") or None
    cfg.web_config_file = str(merged["web_config_file"]) if merged.get("web_config_file") else None

    # Token: --token-file, then the environment, then the file's token_file / token.
    if flags.get("token_file"):
        cfg.token = read_token_file(flags["token_file"], "--token-file")
        cfg.token_source = f"--token-file {flags['token_file']}"
    elif env.get(TOKEN_ENV):
        cfg.token, cfg.token_source = env[TOKEN_ENV].strip(), TOKEN_ENV
    elif raw.get("token_file"):
        cfg.token = read_token_file(str(raw["token_file"]), source)
        cfg.token_source = f"token_file {raw['token_file']}"
    elif raw.get("token"):
        cfg.token, cfg.token_source = str(raw["token"]), f"{source}: token"

    targets_raw = raw.get("targets") or {}
    if not isinstance(targets_raw, dict):
        raise ConfigError(f"{source}: targets: expected a mapping of name: target")
    cfg.targets = {
        str(n): parse_target(str(n), t, f"{source}: targets.{n}") for n, t in targets_raw.items()
    }
    policy_raw = raw.get("policy") or []
    if not isinstance(policy_raw, list):
        raise ConfigError(f"{source}: policy: expected a list of rules")
    cfg.rules = [
        parse_rule(r, f"{source}: policy[{i}]", cfg.targets) for i, r in enumerate(policy_raw)
    ]

    release_dir = merged.get("release_dir")
    if merged.get("model") is not None and not release_dir:
        raise ConfigError(f"{source}: model names the model of release_dir; give release_dir too")
    if release_dir:
        # The embedded default: action="rollback" alerts of this directory's model, not
        # matched above, roll it back. Any other model's alert, and every GPU alert (no
        # model label), reaches it only through a policy rule that says so.
        path = Path(str(release_dir)).absolute()
        model = str(merged.get("model") or path.name)
        if not SAFE_VALUE.fullmatch(model):
            raise ConfigError(
                f"{source}: model: {model!r} is not a model name; give --model NAME "
                "(the model label of the alerts this directory serves)"
            )
        cfg.model = model
        cfg.targets[RELEASE_DIR_TARGET] = TargetSpec(
            RELEASE_DIR_TARGET, "release_dir", {"path": str(path)}
        )
        cfg.rules.append(Rule(RELEASE_DIR_TARGET, {"model": model}))
    if not cfg.rules:
        raise ConfigError(
            "nothing to roll back: give --release-dir DIR, or targets and a policy in --config"
        )
    return cfg


def ensure_token(cfg: ControllerConfig) -> Path | None:
    """No token configured and auth on: make one at <state_dir>/rollback-token (0600, in a
    0700 directory when it makes that too), or reuse the one made before, if it can still
    be trusted (agent/auth.py). Returns its path when it did."""
    if cfg.token or cfg.insecure_no_auth:
        return None
    path = cfg.state_dir / TOKEN_NAME
    try:
        auth.ensure_token(path)
    except OSError as exc:
        raise ConfigError(f"cannot create a token at {path}: {exc.strerror}") from None
    if path.exists() and path.stat().st_size == 0:
        # Only a start interrupted before tokens were written atomically (or a person)
        # leaves it empty; say how to get going again rather than just refusing.
        raise ConfigError(
            f"generated token file {path} is empty: delete it and start again to make "
            "a new one, or give --token-file FILE"
        )
    cfg.token = read_token_file(str(path), "generated token")
    cfg.token_source = f"generated {path}"
    return path
