"""Which alert acts on which target: the policy, pure.

A policy is an ordered list of rules; the first rule whose ``match`` (exact label values)
and ``match_re`` (fully anchored regular expressions) both hold names the target. Only
alerts labelled ``action="rollback"`` are considered at all: the rule files decide what
may act, the policy decides on what.

Target parameters may name alert labels as ``{label}`` (``/srv/models/{model}``,
``deployment: "{workload}"``), so one rule serves every model of a node. An alert
without a label that its target needs is not acted on, with that reason.

What is not acted on says why, in three kinds the metrics count apart: ``ignored`` (not
a rollback alert at all), ``no_target`` (a rollback alert no rule maps to a target: it
is for someone else's model, or names no target) and ``refused`` (a rule matched, but the
alert's labels would make the target something it may not be: a path separator in a
name, a namespace outside the allow-list, a label no environment can hold).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

ACTION_LABEL, ACTION_VALUE = "action", "rollback"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# A label value put into a path, a namespace or a name: no "/", no leading dot (so no "..").
SAFE_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
# Target keys that say what the controller may do, not what an alert asked for: never
# filled from labels nor journaled, but read from the configuration running when the
# rollback executes, so that narrowing them also stops rollbacks already queued.
AUTHORITY_KEYS = frozenset({"allowed_namespaces", "kinds", "allow_partitioned", "history_interval"})


@dataclass(frozen=True)
class TargetSpec:
    name: str
    action: str  # "release_dir", "kubernetes", "kubernetes_workload" or "command"
    params: dict[str, Any]


@dataclass(frozen=True)
class Rule:
    target: str
    match: dict[str, str] = field(default_factory=dict)
    match_re: dict[str, re.Pattern[str]] = field(default_factory=dict)

    def matches(self, labels: dict[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match.items()):
            return False
        return all(p.fullmatch(labels.get(k, "")) for k, p in self.match_re.items())


@dataclass(frozen=True)
class Resolved:
    """A target with its parameters filled from one alert's labels."""

    spec: TargetSpec
    params: dict[str, Any]

    @property
    def action(self) -> str:
        return self.spec.action

    @property
    def target(self) -> str:
        """The label value for metrics and the key of the cooldown: what is rolled back."""
        p = self.params
        if self.spec.action == "release_dir":
            return f"release-dir:{p['path']}"
        if self.spec.action == "kubernetes":
            return f"deployment:{p['namespace']}/{p['deployment']}"
        if self.spec.action == "kubernetes_workload":
            # The pod or workload: its owner is known only once the controller has asked
            # the API server, when it acts (the cooldown per owner is applied there).
            if p.get("pod"):
                return f"pod:{p['namespace']}/{p['pod']}"
            return f"workload:{p['namespace']}/{p['workload_kind']}/{p['workload']}"
        return f"command:{self.spec.name}"


IGNORED, NO_TARGET, REFUSED = "ignored", "no_target", "refused"


@dataclass(frozen=True)
class Ignored:
    reason: str
    result: str = IGNORED


def placeholders(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(_PLACEHOLDER.findall(value))
    if isinstance(value, list):
        return set().union(*(placeholders(v) for v in value)) if value else set()
    return set()


def _label(labels: dict[str, str], name: str) -> str:
    value = labels[name]
    if not SAFE_VALUE.fullmatch(value):
        raise ValueError(f"label {name}={value!r} is not a plain name")
    return value


def fill(value: Any, labels: dict[str, str]) -> Any:
    """``"{model}"`` → the label's value; KeyError names a missing label, ValueError an
    unsafe value (a path separator or a leading dot)."""
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: _label(labels, m.group(1)), value)
    if isinstance(value, list):
        return [fill(v, labels) for v in value]
    return value


def resolve(
    labels: dict[str, str], rules: list[Rule], targets: dict[str, TargetSpec]
) -> Resolved | Ignored:
    if labels.get(ACTION_LABEL) != ACTION_VALUE:
        return Ignored(f'no {ACTION_LABEL}="{ACTION_VALUE}" label')
    for rule in rules:
        if not rule.matches(labels):
            continue
        spec = targets[rule.target]
        try:
            params = {k: fill(v, labels) for k, v in spec.params.items() if k not in AUTHORITY_KEYS}
        except KeyError as exc:
            return Ignored(
                f"target {spec.name} needs label {exc.args[0]!r}, which the alert lacks",
                NO_TARGET,
            )
        except ValueError as exc:
            return Ignored(f"target {spec.name}: {exc}", REFUSED)
        refusal = admit(spec, params)
        if refusal:
            return Ignored(f"target {spec.name}: {refusal}", REFUSED)
        return Resolved(spec, params)
    return Ignored(_no_rule(labels), NO_TARGET)


def _no_rule(labels: dict[str, str]) -> str:
    named = ", ".join(
        f"{k}={labels[k]}" for k in ("model", "namespace", "workload", "gpu") if k in labels
    )
    return f"no policy rule matches ({named or 'the alert names no model, workload or GPU'})"


def admit(spec: TargetSpec, params: dict[str, Any]) -> str:
    """Why a filled target may not be acted on ("" when it may): for a Deployment, a
    namespace outside the target's allow-list. The controller asks again, of the target as
    configured then, before it acts (controller.py), so a journal row written under an
    older, wider configuration cannot widen it."""
    if spec.action in ("kubernetes", "kubernetes_workload"):
        return namespace_refusal(params.get("namespace"), spec.params.get("allowed_namespaces"))
    return ""


def recheck(spec: TargetSpec | None, labels: dict[str, str], params: dict[str, Any]) -> str:
    """Why a rollback decided earlier may not act now ("" when it may), against ``spec``,
    its target as configured now (None: no longer configured): the target must fill to the
    same parameters from the alert's labels, and pass :func:`admit` as configured now."""
    if spec is None:
        return "is no longer in the configuration"
    was = {k: v for k, v in params.items() if k not in AUTHORITY_KEYS}
    try:
        now = {k: fill(v, labels) for k, v in spec.params.items() if k not in AUTHORITY_KEYS}
    except (KeyError, ValueError):
        now = None
    if now != was:
        return "was configured differently when the alert was decided"
    return admit(spec, was)


def namespace_refusal(namespace: Any, allowed: Any) -> str:
    allowed = list(allowed or [])
    if namespace in allowed:
        return ""
    return f"namespace {namespace!r} is not in allowed_namespaces ({', '.join(allowed) or 'none'})"
