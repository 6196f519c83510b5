"""Which metrics and labels a PromQL expression uses, checked against the declarations.

Not a PromQL parser: a scan good enough for the expressions of our dashboards and rules.
It reads selectors (a metric name and its ``{label op "value"}`` matchers), aggregation
label lists (``by``/``without``, applied to the metrics inside the aggregation's argument),
vector matching lists (``on``/``ignoring``/``group_left``/``group_right``, applied to the
metrics of the expression level they join), ``label_replace`` (its destination label
exists from there on) and ``{{label}}`` / ``$labels.label`` in legends and templates.

The recording rules' series (alerts/vigil.rules.yml, from alerts/recording.tmpl.yml) are
known too: each rule's expression is checked like any other, and its output has the labels
of its first ``by (...)`` list (less ``le`` under ``histogram_quantile``), or, without one,
those of the series it reads. A rule may read the series of the rules before it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from agent.metrics import MetricSpec

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alerts" / "vigil.rules.yml"

# Series Prometheus itself writes for every scrape target: not Vigil's, never declared.
PROMETHEUS_SERIES = frozenset({"up", "scrape_samples_scraped", "scrape_duration_seconds"})
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
     "offset", "bool", "inf", "nan"}
)  # fmt: skip
_TOKEN = re.compile(
    r"""(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      |(?P<range>\[[^\]]*\])
      |(?P<num>\d+(?:\.\d+)?(?:e[+-]?\d+)?[a-z]*)
      |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
      |(?P<op>==|!=|=~|!~|>=|<=|[-+*/%^(){},=<>@])
      |(?P<ws>\s+)""",
    re.VERBOSE,
)
_AGGREGATIONS = frozenset(
    {"sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk",
     "quantile", "count_values", "limitk", "limit_ratio"}
)  # fmt: skip
_VARIABLE = re.compile(r"\$\{?\w+\}?")  # Grafana's $__rate_interval, gen-alerts' ${name}
_MATCH_OPS = frozenset({"=", "!=", "=~", "!~"})


def target_labels(servicemonitor: Path = ROOT / "deploy" / "servicemonitor.yaml") -> frozenset[str]:
    """Labels Prometheus adds to every series it scrapes: ``instance`` and ``job``, plus
    the ServiceMonitor's relabelings (``node``, ``cluster``, ...)."""
    doc = yaml.safe_load(servicemonitor.read_text())
    added = {
        r["targetLabel"]
        for ep in doc["spec"]["endpoints"]
        for r in ep.get("relabelings", [])
        if "targetLabel" in r
    }
    return frozenset({"instance", "job", *added})


@dataclass
class Tok:
    kind: str
    text: str


@dataclass
class Group:
    """A bracketed part: ``(...)`` or ``{...}``, with its tokens and sub-groups."""

    open: str
    items: list[Tok | Group] = field(default_factory=list)


def tokenize(expr: str) -> list[Tok]:
    text = _VARIABLE.sub("0", _strip_variables_outside_strings(expr))
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"cannot read {text[pos : pos + 20]!r} in {expr!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            out.append(Tok(str(m.lastgroup), m.group(0)))
    return out


def _strip_variables_outside_strings(expr: str) -> str:
    # Variables inside strings stay (they are matcher values); others become a number.
    parts = re.split(r'("(?:[^"\\]|\\.)*")', expr)
    return "".join(p if p.startswith('"') else _VARIABLE.sub("0", p) for p in parts)


def nest(tokens: list[Tok]) -> Group:
    root = Group("")
    stack = [root]
    for t in tokens:
        if t.text in ("(", "{"):
            g = Group(t.text)
            stack[-1].items.append(g)
            stack.append(g)
        elif t.text in (")", "}"):
            if len(stack) == 1:
                raise ValueError(f"unbalanced {t.text!r}")
            stack.pop()
        else:
            stack[-1].items.append(t)
    if len(stack) != 1:
        raise ValueError("unbalanced brackets")
    return root


@dataclass
class Scope:
    """What one expression level reads: series names and labels made by label_replace."""

    series: set[str] = field(default_factory=set)
    made: set[str] = field(default_factory=set)


class Checker:
    """Checks expressions against the declarations; ``problems`` collects what is wrong."""

    def __init__(
        self, specs: Iterable[MetricSpec], targets: frozenset[str], rules: Path | None = RULES
    ) -> None:
        self.targets = targets
        self.labels: dict[str, frozenset[str]] = {}
        for m in specs:
            for s in m.series_names:
                extra = {"le"} if s.endswith("_bucket") and m.type == "histogram" else set()
                self.labels[s] = frozenset({*m.labels, *extra})
        self.problems: list[str] = []
        self.recorded: dict[str, frozenset[str]] = {}
        if rules is not None and rules.exists():
            for name, expr in recording_rules(rules):
                self.record(name, expr)

    def record(self, name: str, expr: str) -> None:
        """Checks a recording rule and makes its series known, with its output labels."""
        scope = self.check(expr, f"recording rule {name}")
        labels = output_labels(expr)
        if labels is None:
            labels = set()
            for s in scope.series:
                labels |= self.series_labels(s) or set()
        if expr.lstrip().startswith("histogram_quantile"):
            labels = set(labels) - {"le"}
        self.recorded[name] = frozenset(labels)
        self.labels[name] = frozenset(labels)

    def series_labels(self, name: str) -> frozenset[str] | None:
        if name in PROMETHEUS_SERIES:
            return frozenset()
        return self.labels.get(name)

    def available(self, scope: Scope) -> frozenset[str]:
        out = set(self.targets) | scope.made
        for s in scope.series:
            out |= self.series_labels(s) or set()
        return frozenset(out)

    def check(
        self, expr: str, where: str, legends: Iterable[str] = (), templates: Iterable[str] = ()
    ) -> Scope:
        """Checks one expression, the Grafana legends (``{{label}}``) and the alert templates
        (``$labels.label``) shown with it."""
        try:
            scope = self._level(nest(tokenize(expr)), where)
        except ValueError as exc:
            self.problems.append(f"{where}: {exc}")
            return Scope()
        have = self.available(scope)
        used = [n for t in legends for n in re.findall(r"\{\{\s*(\w+)\s*\}\}", t)]
        used += [n for t in templates for n in re.findall(r"\$labels\.(\w+)", t)]
        for name in used:
            if name not in have and not name.startswith("__"):
                self.problems.append(f"{where}: the template's {name!r} is a label no series has")
        return scope

    def label_values(self, selector: str, label: str, where: str) -> None:
        """A Grafana variable's ``label_values(selector, label)``."""
        scope = self.check(selector, where)
        if label not in self.available(scope):
            self.problems.append(f"{where}: label_values reads {label!r}, which no series has")

    # -- one bracket level ------------------------------------------------------------
    def _level(self, g: Group, where: str) -> Scope:
        scope = Scope()
        joins: list[str] = []
        items = g.items
        last: Scope | None = None  # the scope of the latest ( ) group of this level
        i = 0
        while i < len(items):
            item = items[i]
            nxt = items[i + 1] if i + 1 < len(items) else None
            if isinstance(item, Group):
                if item.open == "{":  # a selector without a name
                    self._matchers(item, None, where)
                else:
                    last = self._level(item, where)
                    self._merge(scope, last)
                i += 1
                continue
            if item.kind != "ident":
                i += 1
                continue
            word = item.text
            if word in ("by", "without") and isinstance(nxt, Group):
                labels = _names(nxt)
                after = items[i + 2] if i + 2 < len(items) else None
                # `sum by (x) (expr)` or `sum (expr) by (x)`: the argument is the scope.
                if isinstance(after, Group) and after.open == "(":
                    last = self._level(after, where)
                    self._merge(scope, last)
                    self._labels_exist(labels, self.available(last), word, where)
                    i += 3
                    continue
                if last is not None:
                    self._labels_exist(labels, self.available(last), word, where)
                i += 2
                continue
            if word in ("on", "ignoring", "group_left", "group_right"):
                if isinstance(nxt, Group) and nxt.open == "(":
                    joins.extend(_names(nxt))
                    i += 2
                else:
                    i += 1
                continue
            if word == "label_replace" and isinstance(nxt, Group):
                args = _split_args(nxt)
                if len(args) >= 2 and len(args[1]) == 1 and isinstance(args[1][0], Tok):
                    scope.made.add(args[1][0].text.strip("\"'`"))
                self._merge(scope, self._level(nxt, where))
                i += 2
                continue
            if word in _AGGREGATIONS or (isinstance(nxt, Group) and nxt.open == "("):
                i += 1  # a function or an aggregation: its argument is the next group
                continue
            if word.lower() in _KEYWORDS:
                i += 1
                continue
            # A selector: metric name, then maybe matchers.
            if self.series_labels(word) is None:
                self.problems.append(f"{where}: {word} is not a declared metric")
            scope.series.add(word)
            if isinstance(nxt, Group) and nxt.open == "{":
                self._matchers(nxt, word, where)
                i += 2
            else:
                i += 1
        if joins:
            self._labels_exist(joins, self.available(scope), "on/group", where)
        return scope

    def _matchers(self, g: Group, metric: str | None, where: str) -> None:
        toks = [t for t in g.items if isinstance(t, Tok)]
        have = (
            self.targets | (self.series_labels(metric) or frozenset())
            if metric is not None
            else None
        )
        for a, b in itertools.pairwise(toks):
            if a.kind == "ident" and b.text in _MATCH_OPS:
                if a.text == "__name__" or have is None:
                    continue
                if a.text not in have:
                    self.problems.append(f"{where}: {metric} has no label {a.text!r}")

    def _labels_exist(
        self, labels: list[str], have: frozenset[str], clause: str, where: str
    ) -> None:
        for label in labels:
            if label not in have:
                self.problems.append(
                    f"{where}: {clause} ({label}) names a label none of its series has"
                )

    @staticmethod
    def _merge(into: Scope, other: Scope) -> None:
        into.series |= other.series
        into.made |= other.made


def recording_rules(path: Path = RULES) -> list[tuple[str, str]]:
    """(recorded name, expression) of every recording rule in a rule file, in order."""
    doc = yaml.safe_load(path.read_text())
    doc = doc.get("spec", doc)
    return [
        (str(r["record"]), str(r["expr"]))
        for g in doc["groups"]
        for r in g["rules"]
        if "record" in r
    ]


def output_labels(expr: str) -> set[str] | None:
    """The labels of the first ``by (...)`` list of ``expr``, or None when it has none."""
    toks = tokenize(expr)
    for i, t in enumerate(toks):
        if t.kind == "ident" and t.text == "by" and i + 1 < len(toks) and toks[i + 1].text == "(":
            out: set[str] = set()
            for u in toks[i + 2 :]:
                if u.text == ")":
                    return out
                if u.kind == "ident":
                    out.add(u.text)
    return None


def _names(g: Group) -> list[str]:
    return [t.text for t in g.items if isinstance(t, Tok) and t.kind == "ident"]


def _split_args(g: Group) -> list[list[Tok | Group]]:
    args: list[list[Tok | Group]] = [[]]
    for item in g.items:
        if isinstance(item, Tok) and item.text == ",":
            args.append([])
        else:
            args[-1].append(item)
    return args
