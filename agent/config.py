"""One typed configuration: defaults < YAML file < VIGIL_* environment < flags.

Every setting has one flat key (``listen``, ``path.procfs``, ``collector.gpu.interval``),
and each key is spelled the same way everywhere:

=========================  ==============================  ================================
flag                       environment                     YAML
=========================  ==============================  ================================
``--listen``               ``VIGIL_LISTEN``                ``listen:``
``--path.procfs``          ``VIGIL_PATH_PROCFS``           ``path: {procfs: }``
``--[no-]collector.gpu``   ``VIGIL_COLLECTOR_GPU``         ``collectors: {gpu: {enabled: }}``
``--collector.gpu.interval`` ``VIGIL_COLLECTOR_GPU_INTERVAL`` ``collectors: {gpu: {interval: }}``
=========================  ==============================  ================================

Unknown keys and bad values are rejected with a :class:`ConfigError` that names the key,
where it came from and what is allowed. A setting's type, default, bounds and help are
declared once, as an :class:`agent.options.Field` (the agent's own, below) or as a field of
a collector's settings dataclass (its package's settings.py); everything here is derived.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from agent.auth import INGEST_TOKEN_NAME
from agent.options import ConfigError, Field, SettingError, build, declared
from agent.registry import CollectorSpec, Paths, max_series_default

# Python processes whose command line names a common inference server or framework,
# plus the non-Python servers that are usually the GPU holders. Matched against the
# whole command line (arguments joined by spaces), case-insensitively.
DEFAULT_WATCH = (
    r"(?i)^\S*python[0-9.]*\s.*\b(vllm|sglang|tgi|text_generation|torchserve|ts\.model_server"
    r"|ray|transformers|torch|tensorflow|jax|triton|onnxruntime|deepspeed|lmdeploy|mlserver"
    r"|bentoml|kserve|uvicorn|gunicorn|fastapi|diffusers|llama_cpp)\b",
    r"(?i)^\S*(tritonserver|text-generation-launcher|text-generation-router)\b",
)


def default_state_dir() -> str:
    return "/var/lib/vigil" if os.geteuid() == 0 else "./var"


# Settings of the agent itself; collectors add theirs through their CollectorSpec.
AGENT_FIELDS: tuple[Field, ...] = (
    Field(
        "listen",
        "str",
        ":9475",
        "HOST:PORT for /metrics, /healthz, /readyz and the APIs; "
        "an empty HOST listens on every interface.",
        metavar="HOST:PORT",
    ),
    Field(
        "watch",
        "list",
        list(DEFAULT_WATCH),
        "regex matched against each process's command "
        "line; repeat the flag for several (VIGIL_WATCH separates them with ';'). Default: "
        "Python inference servers and frameworks.",
    ),
    Field(
        "log.level", "str", "info", "log verbosity.", choices=("debug", "info", "warning", "error")
    ),
    Field("log.format", "str", "logfmt", "log line format.", choices=("logfmt", "json")),
    Field(
        "state-dir",
        "str",
        None,
        "where drift references and journals live "
        "(default /var/lib/vigil as root, ./var otherwise).",
        metavar="DIR",
    ),
    Field(
        "path.procfs",
        "str",
        "/proc",
        "procfs mount point (a host's /proc inside a container).",
        metavar="DIR",
    ),
    Field(
        "discovery.interval",
        "duration",
        5.0,
        "how often the watched-process set is refreshed.",
        minimum=0.1,
    ),
    Field(
        "otlp-endpoint",
        "str",
        "",
        "OTLP/HTTP metrics endpoint, e.g. "
        "http://collector:4318/v1/metrics; empty disables OTLP export.",
        metavar="URL",
    ),
    Field(
        "otlp-interval", "duration", 15.0, "how often metrics are pushed over OTLP.", minimum=0.1
    ),
    Field(
        "kubernetes.mode",
        "str",
        "auto",
        "resolve pod UIDs to pod names through the Kubernetes API: auto (when running in a "
        "cluster), on, or off.",
        choices=("auto", "on", "off"),
    ),
    Field(
        "kubernetes.node-name",
        "str",
        "",
        "this node's name; only its pods are watched (set from the downward API in the DaemonSet).",
        metavar="NAME",
    ),
    Field(
        "kubernetes.kubeconfig",
        "str",
        "",
        "kubeconfig file to use instead of the in-cluster service account.",
        metavar="FILE",
    ),
    Field(
        "ingest-token-file",
        "str",
        "",
        "file holding the bearer token every /v1 API (drift, profiles) requires; "
        "default: <state-dir>/ingest-token, generated (mode 0600) on first start.",
        metavar="FILE",
    ),
    Field(
        "web.config.file",
        "str",
        "",
        "TLS and basic auth, in the Prometheus exporter-toolkit web configuration format "
        "(tls_server_config, basic_auth_users with bcrypt hashes).",
        metavar="FILE",
    ),
)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """``"5"``, ``"5s"``, ``"500ms"``, ``"2m"`` → seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration; use e.g. 5, 5s, 500ms, 2m")
    return float(m.group(1)) * _UNIT[m.group(2)]


def coerce(f: Field, value: Any, source: str) -> Any:
    """Converts a raw value (a string from env/flags, or a YAML scalar) to the field's type."""

    def fail(why: str) -> ConfigError:
        allowed = f" (allowed: {', '.join(f.choices)})" if f.choices else ""
        return ConfigError(f"{f.key} (from {source}): {why}{allowed}")

    try:
        if f.type == "bool":
            if isinstance(value, bool):
                out: Any = value
            elif str(value).strip().lower() in _TRUE:
                out = True
            elif str(value).strip().lower() in _FALSE:
                out = False
            else:
                raise fail(f"{value!r} is not a boolean; use true or false")
        elif f.type == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise fail(f"{value!r} is not an integer")
            out = int(str(value).strip())
        elif f.type == "float":
            if isinstance(value, bool):
                raise fail(f"{value!r} is not a number")
            out = float(value)
        elif f.type == "duration":
            if isinstance(value, bool):
                raise fail(f"{value!r} is not a duration; use e.g. 5, 5s, 500ms, 2m")
            out = float(value) if isinstance(value, int | float) else parse_duration(str(value))
        elif f.type == "list":
            if isinstance(value, str):
                out = [v for v in value.split(";") if v.strip()]
            elif isinstance(value, Sequence):
                out = [str(v) for v in value]
            else:
                raise fail(f"{value!r} is not a list")
        else:
            if isinstance(value, Mapping | list):
                raise fail(f"{value!r} is not a string")
            out = "" if value is None else str(value)
    except ValueError as exc:
        raise fail(
            str(exc) if "duration" in str(exc) else f"{value!r} is not a valid {f.type}"
        ) from None
    if f.choices is not None and out not in f.choices:
        raise fail(f"{out!r} is not allowed")
    if isinstance(out, float) and not math.isfinite(out):
        raise fail(f"{value!r} is not a finite number")
    if f.minimum is not None and isinstance(out, int | float) and out < f.minimum:
        raise fail(f"{out!r} is below the minimum {f.minimum:g}")
    if f.maximum is not None and isinstance(out, int | float) and out > f.maximum:
        raise fail(f"{out!r} is above the maximum {f.maximum:g}")
    if f.key == "watch" or f.key.endswith(".watch"):
        for pattern in out:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise fail(f"{pattern!r} is not a valid regex: {exc}") from None
    return out


def collector_fields(spec: CollectorSpec) -> list[Field]:
    """The on/off switch, then one field per field of the collector's settings dataclass."""
    fields = [
        Field(
            f"collector.{spec.name}",
            "bool",
            spec.default_enabled,
            f"enable the {spec.name} collector: {spec.help}",
        )
    ]
    for opt in declared(spec.settings):
        # A list default is a tuple in the frozen settings but a list like every list
        # value read from flags, env or YAML, so that a value equal to the default is equal.
        default = list(opt.default) if opt.type == "list" else opt.default
        fields.append(replace(opt, key=f"collector.{spec.name}.{opt.key}", default=default))
    # Every collector's series cap, enforced by the scrape wrapper (agent/registry.py).
    fields.append(
        Field(
            f"collector.{spec.name}.max-series",
            "int",
            max_series_default(spec.name),
            "most series the collector may export per scrape; whole series beyond it are "
            "dropped and counted in vigil_scrape_collector_series_dropped (docs/scale.md).",
            minimum=1,
        )
    )
    return fields


@dataclass
class Config:
    """The resolved settings, keyed by flat key; ``origin`` says where each value came from."""

    values: dict[str, Any]
    origin: dict[str, str] = field(default_factory=dict)
    specs: tuple[CollectorSpec, ...] = ()
    # collector name → its settings dataclass instance, built from ``values``
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def listen(self) -> str:
        return str(self.values["listen"])

    @property
    def watch(self) -> list[str]:
        return list(self.values["watch"])

    @property
    def watch_is_default(self) -> bool:
        """No --watch given: discovery also watches Python processes with an ML runtime
        loaded. A --watch the user chose is exactly what gets watched."""
        return self.watch == list(DEFAULT_WATCH)

    @property
    def procfs(self) -> str:
        return str(self.values["path.procfs"])

    @property
    def state_dir(self) -> Path:
        return Path(self.values.get("state-dir") or default_state_dir())

    def get(self, key: str) -> Any:
        return self.values[key]

    def enabled(self, collector: str) -> bool:
        return bool(self.values[f"collector.{collector}"])

    def max_series(self) -> dict[str, int]:
        """Each collector's series cap (collector.<name>.max-series)."""
        return {s.name: int(self.values[f"collector.{s.name}.max-series"]) for s in self.specs}

    def explicitly_enabled(self, collector: str) -> bool:
        key = f"collector.{collector}"
        return bool(self.values[key]) and self.origin.get(key, "default") != "default"

    @property
    def paths(self) -> Paths:
        given = str(self.values.get("ingest-token-file") or "")
        state = self.state_dir
        return Paths(
            procfs=self.procfs,
            state_dir=state,
            token_file=Path(given) if given else state / INGEST_TOKEN_NAME,
            token_given=bool(given),
        )


def all_fields(specs: Sequence[CollectorSpec]) -> dict[str, Field]:
    out = {f.key: f for f in AGENT_FIELDS}
    for spec in specs:
        for f in collector_fields(spec):
            out[f.key] = f
    return out


def flatten_yaml(doc: Any, source: str, specs: Sequence[CollectorSpec]) -> dict[str, Any]:
    """Nested YAML mapping → flat keys, refusing anything unknown."""
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping of settings")
    known = all_fields(specs)
    names = {s.name for s in specs}
    flat: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for raw_key, value in node.items():
            key = f"{prefix}{raw_key}"
            if prefix == "" and raw_key == "collectors":
                if not isinstance(value, Mapping):
                    raise ConfigError(f"{source}: collectors must be a mapping of collector names")
                for cname, copts in value.items():
                    if cname not in names:
                        raise ConfigError(
                            f"{source}: unknown collector {cname!r} under collectors "
                            f"(allowed: {', '.join(sorted(names))})"
                        )
                    if copts is None:
                        continue
                    if not isinstance(copts, Mapping):
                        raise ConfigError(f"{source}: collectors.{cname} must be a mapping")
                    for okey, ovalue in copts.items():
                        fkey = (
                            f"collector.{cname}"
                            if okey == "enabled"
                            else f"collector.{cname}.{okey}"
                        )
                        if fkey not in known:
                            allowed = ["enabled"] + [
                                k.split(".", 2)[2]
                                for k in known
                                if k.startswith(f"collector.{cname}.")
                            ]
                            raise ConfigError(
                                f"{source}: unknown key collectors.{cname}.{okey} "
                                f"(allowed: {', '.join(allowed)})"
                            )
                        flat[fkey] = ovalue
                continue
            if key in known:
                flat[key] = value
            elif isinstance(value, Mapping) and any(k.startswith(key + ".") for k in known):
                walk(value, key + ".")
            else:
                top = sorted({k.split(".")[0] for k in known if not k.startswith("collector.")})
                allowed_text = (
                    ", ".join([*top, "collectors"])
                    if prefix == ""
                    else ", ".join(sorted(k[len(prefix) :] for k in known if k.startswith(prefix)))
                )
                raise ConfigError(f"{source}: unknown key {key!r} (allowed: {allowed_text})")

    walk(doc, "")
    for key, value in flat.items():
        # Flags and the environment are text and parse "false"; YAML has booleans, so a
        # quoted one is a mistake to point out, not a string to guess at.
        if known[key].type == "bool" and not isinstance(value, bool):
            raise ConfigError(
                f"{source}: {key}: {value!r} is not a boolean; write true or false, without quotes"
            )
    return flat


def load_yaml(path: str, specs: Sequence[CollectorSpec]) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    return flatten_yaml(doc, f"config file {path}", specs)


# VIGIL_* variables read by other commands (the rollback controller, the drift CLI) or by
# set-up scripts; `vigil run` leaves them alone instead of calling them unknown.
FOREIGN_ENV = {
    "VIGIL_ROLLBACK_TOKEN",
    "VIGIL_VENV",
    "VIGIL_SYSTEM_PYTHON",
    "VIGIL_SETUP_MINIMAL",
    "VIGIL_SETUP_NO_KERNEL",
    "VIGIL_CONFIG",
    "VIGIL_DEBUG",
    "VIGIL_ROLLBACK_FAILPOINT",
}


def from_env(env: Mapping[str, str], specs: Sequence[CollectorSpec]) -> dict[str, Any]:
    by_env = {f.env: f.key for f in all_fields(specs).values()}
    out: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith("VIGIL_") or name in FOREIGN_ENV:
            continue
        if name not in by_env:
            close = [e for e in by_env if e.startswith(name.rsplit("_", 1)[0])][:5]
            hint = f" (did you mean: {', '.join(close)})" if close else ""
            raise ConfigError(f"unknown environment variable {name}{hint}")
        out[by_env[name]] = value
    return out


def resolve(
    specs: Sequence[CollectorSpec],
    *,
    yaml_values: Mapping[str, Any] | None = None,
    yaml_source: str = "config file",
    env_values: Mapping[str, Any] | None = None,
    flag_values: Mapping[str, Any] | None = None,
) -> Config:
    """Layers the sources, later ones winning, and checks every value."""
    fields = all_fields(specs)
    values: dict[str, Any] = {k: f.default for k, f in fields.items()}
    origin: dict[str, str] = {k: "default" for k in fields}
    layers = (
        (yaml_values or {}, yaml_source),
        (env_values or {}, "environment"),
        (flag_values or {}, "flags"),
    )
    for layer, source in layers:
        for key, raw in layer.items():
            f = fields.get(key)
            if f is None:
                raise ConfigError(f"unknown setting {key!r} (from {source})")
            values[key] = coerce(f, raw, _where(f, source))
            origin[key] = source
    settings = {spec.name: _settings(spec, values, origin, fields) for spec in specs}
    return Config(values=values, origin=origin, specs=tuple(specs), settings=settings)


def _where(f: Field, source: str) -> str:
    """How the user wrote the value: the variable, the flag, or the file's name."""
    return {"environment": f.env, "flags": f.flag}.get(source, source)


def _settings(
    spec: CollectorSpec,
    values: Mapping[str, Any],
    origin: Mapping[str, str],
    fields: Mapping[str, Field],
) -> Any:
    """The collector's settings instance; a value its dataclass refuses (a check across
    fields) is a ConfigError like any bad value, naming the key and its source."""
    prefix = f"collector.{spec.name}."
    mine = {k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix)}
    try:
        return build(spec.settings, mine)
    except SettingError as exc:
        key = prefix + exc.option
        where = _where(fields[key], origin.get(key, "default"))
        raise ConfigError(f"{key} (from {where}): {exc.why}") from None
