"""Each metric is declared once (agent/metrics.py); the catalogue, the dashboards and the
alert rules follow the declarations, and a name against the rules fails at import."""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from promql import Checker, target_labels

from agent.catalogue import declarations
from agent.collectors import SPECS
from agent.metrics import DeclarationError, MetricSpec, by_name

ROOT = Path(__file__).resolve().parents[2]


def spec(
    name: str, type_: str = "gauge", unit: str = "", labels: tuple[str, ...] = ()
) -> MetricSpec:
    return MetricSpec(name, type_, "Help.", "test", labels, unit)


# -- the naming rules ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "type_", "unit", "labels"),
    [
        ("vigil_x_total", "counter", "", ()),
        ("vigil_x_seconds_total", "counter", "seconds", ()),
        ("vigil_x_seconds", "histogram", "seconds", ("pod",)),
        ("vigil_x_bytes_per_second", "gauge", "bytes_per_second", ()),
        ("vigil_x_ratio", "gauge", "ratio", ("a", "b")),
        ("vigil_x_info", "gauge", "", ("version",)),
    ],
)
def test_names_that_follow_the_rules_are_accepted(
    name: str, type_: str, unit: str, labels: tuple[str, ...]
) -> None:
    assert spec(name, type_, unit, labels).name == name


@pytest.mark.parametrize(
    ("name", "type_", "unit", "labels", "problem"),
    [
        ("vigil_x", "counter", "", (), "ends in _total"),
        ("vigil_x_total", "gauge", "", (), "only counters"),
        ("vigil_x_seconds", "gauge", "", (), "no unit is declared"),
        ("vigil_x_bytes", "gauge", "seconds", (), "does not end in _seconds"),
        ("vigil_x_latency_ms", "gauge", "", (), "not a base unit"),
        ("vigil_x_used_percent", "gauge", "", (), "not a base unit"),
        ("vigil_x_minutes", "gauge", "minutes", (), "not a base unit"),
        ("vigil_x_seconds_bucket", "histogram", "seconds", (), "base name"),
        ("vigil_x", "summary", "", (), "type"),
        ("vigil-x", "gauge", "", (), "valid metric name"),
        ("vigil_x", "gauge", "", ("pod", "pod"), "twice"),
        ("vigil_x", "gauge", "", ("le",), "reserved"),
        ("vigil_x", "gauge", "", ("__name__",), "valid label name"),
    ],
)
def test_a_name_against_the_rules_fails_at_declaration(
    name: str, type_: str, unit: str, labels: tuple[str, ...], problem: str
) -> None:
    with pytest.raises(DeclarationError, match=problem):
        spec(name, type_, unit, labels)


def test_empty_help_and_owner_are_refused() -> None:
    with pytest.raises(DeclarationError, match="help"):
        MetricSpec("vigil_x", "gauge", " ", "test")
    with pytest.raises(DeclarationError, match="owner"):
        MetricSpec("vigil_x", "gauge", "Help.", "")


def test_a_name_declared_twice_is_refused() -> None:
    with pytest.raises(DeclarationError, match="declared twice"):
        by_name([spec("vigil_x"), spec("vigil_x")])


# -- rendering from a declaration ------------------------------------------------------


def exposition(*families: Any) -> str:
    class Fixed:
        def collect(self) -> list[Any]:
            return list(families)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def test_a_family_is_exposed_under_the_declared_name_type_and_help() -> None:
    counter = spec("vigil_x_total", "counter", labels=("kind",)).family()
    counter.add_metric(["a"], 2.0)
    hist = spec("vigil_y_seconds", "histogram", "seconds", ("pod",)).family()
    hist.add_metric(["p"], [("1.0", 1.0), ("+Inf", 2.0)], 3.0)
    text = exposition(counter, hist)
    assert "# HELP vigil_x_total Help.\n# TYPE vigil_x_total counter\n" in text
    assert 'vigil_x_total{kind="a"} 2.0' in text
    assert "# TYPE vigil_y_seconds histogram" in text
    assert 'vigil_y_seconds_bucket{le="+Inf",pod="p"} 2.0' in text


def test_a_render_may_narrow_the_labels_but_not_add_one() -> None:
    m = spec("vigil_x", labels=("pod", "pid", "cgroup"))
    assert m.family(["pod", "cgroup"]) is not None
    with pytest.raises(DeclarationError, match="not declared"):
        m.family(["pod", "node"])


# -- the declarations as a whole -------------------------------------------------------


def test_every_collector_declares_its_metrics_under_its_own_name() -> None:
    for s in SPECS:
        assert s.metrics, f"{s.name} declares no metric"
        assert {m.owner for m in s.metrics} == {s.name}, s.name
    owners = {m.owner for m in declarations()}
    assert owners == {s.name for s in SPECS} | {"agent", "discovery", "rollback-controller"}


def test_families_are_built_only_from_declarations() -> None:
    """No module builds a family from a name written in place: every one goes through
    MetricSpec.family() (or passes a declaration's fields to prometheus_client)."""
    builders = re.compile(r"(MetricFamily|^Counter|^Gauge|^Histogram|^Summary|^Info|^Enum)$")
    found = []
    for path in sorted((ROOT / "agent").rglob("*.py")):
        if path == ROOT / "agent" / "metrics.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            first = node.args[0]
            if (
                builders.search(name)
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}({first.value!r})")
    assert found == []


# -- docs/metrics.md -------------------------------------------------------------------


def gen_metrics_doc() -> ModuleType:
    path = str(ROOT / "scripts" / "gen-metrics-doc")
    loader = importlib.machinery.SourceFileLoader("gen_metrics_doc", path)
    module_spec = importlib.util.spec_from_loader("gen_metrics_doc", loader)
    assert module_spec
    module = importlib.util.module_from_spec(module_spec)
    loader.exec_module(module)
    return module


def test_docs_metrics_md_is_generated_from_the_declarations(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gen = gen_metrics_doc()
    monkeypatch.setattr("sys.argv", ["gen-metrics-doc", "--check"])
    assert gen.main() == 0, "docs/metrics.md is stale: run scripts/gen-metrics-doc"
    text = gen.DOC.read_text()
    for m in declarations():
        assert f"| {m.name} | {m.type} |" in text
    # The check fails on a doc edited by hand.
    stale = tmp_path / "metrics.md"
    stale.write_text(text.replace("Device memory in use.", "Device memory used."))
    monkeypatch.setattr(gen, "DOC", stale)
    assert gen.main() == 1


# -- dashboards and alert rules --------------------------------------------------------

_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<sel>.+),\s*(?P<label>\w+)\s*\)\s*$")


def dashboard_problems(board: dict[str, Any], name: str, checker: Checker) -> None:
    for panel in board["panels"]:
        for t in panel.get("targets", []):
            where = f"{name}: {panel['title']} {t.get('refId', '')}"
            checker.check(t["expr"], where, legends=[t.get("legendFormat", "")])
    for ann in board.get("annotations", {}).get("list", []):
        if ann.get("expr"):
            texts = [ann.get("titleFormat", ""), ann.get("textFormat", "")]
            tags = [f"{{{{{k.strip()}}}}}" for k in ann.get("tagKeys", "").split(",") if k]
            checker.check(ann["expr"], f"{name}: annotation {ann['name']}", [*texts, *tags])
    for var in board.get("templating", {}).get("list", []):
        query = var.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        m = _LABEL_VALUES.match(text)
        if m:
            checker.label_values(m["sel"], m["label"], f"{name}: variable {var['name']}")


def rule_problems(doc: dict[str, Any], name: str, checker: Checker) -> int:
    n = 0
    for group in doc["groups"]:
        for r in group["rules"]:
            templates = [str(v) for v in (*r.get("annotations", {}).values(),
                                          *r.get("labels", {}).values())]  # fmt: skip
            checker.check(str(r["expr"]), f"{name}: {r.get('alert') or r.get('record')}",
                          templates=templates)  # fmt: skip
            n += 1
    return n


def checker() -> Checker:
    return Checker(declarations(), target_labels())


def test_dashboards_use_only_declared_metrics_and_labels() -> None:
    c = checker()
    boards = sorted((ROOT / "dashboards").glob("*.json"))
    assert boards
    for path in boards:
        dashboard_problems(json.loads(path.read_text()), path.name, c)
    assert c.problems == []


@pytest.mark.parametrize(
    "path", ["alerts/vigil.rules.yml", "alerts/rules.tmpl.yml", "deploy/prometheusrule.yaml"]
)
def test_alert_rules_use_only_declared_metrics_and_labels(path: str) -> None:
    doc = yaml.safe_load((ROOT / path).read_text())
    c = checker()
    assert rule_problems(doc.get("spec", doc), path, c) > 0
    assert c.problems == []


# -- the scan itself: each kind of mistake is found --------------------------------------


@pytest.mark.parametrize(
    ("expr", "legend", "problem"),
    [
        ("vigil_gpu_up_total", "", "vigil_gpu_up_total is not a declared metric"),
        ('vigil_gpu_up{pod="x"}', "", "vigil_gpu_up has no label 'pod'"),
        ("sum by (pod) (vigil_gpu_up)", "", "by (pod)"),
        ("sum(vigil_gpu_up) by (pod)", "", "by (pod)"),
        ("sum without (model) (vigil_gpu_up)", "", "without (model)"),
        ("vigil_gpu_up * on (gpu, pod) vigil_gpu_info", "", "on/group (pod)"),
        ("vigil_gpu_up * on (gpu) group_left (model) vigil_gpu_info", "", "on/group (model)"),
        ("vigil_gpu_up", "{{gpu}} {{pod}}", "'pod' is a label no series has"),
        ('rate(vigil_sched_offcpu_seconds_sum{le="1"}[5m])', "", "no label 'le'"),
        ("sum by (le) (vigil_drift_detected)", "", "by (le)"),
    ],
)
def test_the_scan_finds_each_kind_of_mistake(expr: str, legend: str, problem: str) -> None:
    c = checker()
    c.check(expr, "q", legends=[legend])
    assert len(c.problems) == 1 and problem in c.problems[0], c.problems


@pytest.mark.parametrize(
    "expr",
    [
        "histogram_quantile(0.99, sum by (le, pod) "
        '(rate(vigil_sched_runqueue_latency_seconds_bucket{node=~"$node"}[$__rate_interval])))',
        "vigil_gpu_up * on (instance, job, gpu) group_left (name) vigil_gpu_info",
        "group by (model) "
        '(label_replace(vigil_watched_process_info, "model", "$1", "workload", "(.+)"))',
        "max by (cluster) (up) > ${threshold}",
        'topk(5, max without (pid) (vigil_profile_function_ratio{kind="self"}))',
    ],
)
def test_the_scan_accepts_what_prometheus_would(expr: str) -> None:
    c = checker()
    c.check(expr, "q")
    assert c.problems == []


def test_a_variable_reading_a_label_the_metric_lacks_is_found() -> None:
    c = checker()
    c.label_values('vigil_build_info{cluster=~"$cluster"}', "gpu", "v")
    assert c.problems == ["v: label_values reads 'gpu', which no series has"]


# -- the real output against the declarations (tests/integration/test_catalogue.py) ------


def test_output_that_strays_from_its_declaration_is_reported() -> None:
    from catalogue import load_catalogue, undocumented

    rows = load_catalogue()
    good = exposition(*(m.family() for m in (rows_spec("vigil_gpu_up"),)))
    assert undocumented(good, rows) == []
    gauge = "# HELP {n} {h}\n# TYPE {n} {t}\n{n}{{{lab}}} 1.0\n"
    help_up = rows["vigil_gpu_up"].help
    cases = {
        gauge.format(n="vigil_gpu_upp", h="x", t="gauge", lab=""): "not declared",
        gauge.format(n="vigil_gpu_xid_errors_total", h="x", t="gauge", lab=""): "as gauge",
        gauge.format(n="vigil_gpu_up", h=help_up, t="gauge", lab='pod="p"'): "['pod']",
        gauge.format(n="vigil_gpu_up", h="Is it up?", t="gauge", lab=""): "with help",
    }
    for text, problem in cases.items():
        (found,) = undocumented(text, rows)
        assert problem in found, (text, found)


def rows_spec(name: str) -> MetricSpec:
    return {m.name: m for m in declarations()}[name]


def test_help_texts_that_list_the_values_of_a_label_list_them_all() -> None:
    from agent.rollback import metrics as rollback
    from agent.rollback.actions.base import DRY_RUN, FAILED, REFUSED, SKIPPED, SUCCEEDED
    from agent.rollback.controller import ALERT_RESULTS

    for result in ALERT_RESULTS:
        assert result in rollback.ALERTS.help, result
    for result in (SUCCEEDED, SKIPPED, FAILED, DRY_RUN, REFUSED):
        assert result in rollback.ROLLBACKS.help, result
