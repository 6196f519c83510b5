"""Alert rules: generated from one thresholds file, valid for promtool, unit-tested for
every alert, and wired to Alertmanager with a config amtool accepts."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "alerts"
RULES = ALERTS / "vigil.rules.yml"
SEVERITIES = {"critical", "warning", "info"}


def contract() -> set[str]:
    """The series the rules may read: what Vigil declares (agent/catalogue.py; histograms
    with their _bucket/_sum/_count) and Prometheus' own ``up``."""
    from agent.catalogue import declarations

    return {"up", *(s for m in declarations() for s in m.series_names)}


# Labels that name what to roll back (see the policy in docs/rollback.md).
TARGET_LABEL_SETS = [{"model", "version"}, {"namespace", "workload"}, {"gpu", "uuid"}]


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed (scripts/setup.sh installs it)"
    return path


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)


def gen_alerts() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader(
        "gen_alerts", str(ROOT / "scripts" / "gen-alerts")
    )
    spec = importlib.util.spec_from_loader("gen_alerts", loader)
    assert spec
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def records() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "record" in r]


def test_generated_files_are_up_to_date() -> None:
    res = run(sys.executable, "scripts/gen-alerts", "--check")
    assert res.returncode == 0, res.stderr


def test_promtool_checks_the_rules_and_the_prometheusrule(tmp_path: Path) -> None:
    res = run(tool("promtool"), "check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(rules()) + len(records())} rules found" in res.stdout
    cr = yaml.safe_load((ROOT / "deploy" / "prometheusrule.yaml").read_text())
    assert cr["kind"] == "PrometheusRule" and cr["apiVersion"] == "monitoring.coreos.com/v1"
    assert cr["spec"] == yaml.safe_load(RULES.read_text()), "the CR carries the same rules"
    spec = tmp_path / "spec.yml"
    spec.write_text(yaml.safe_dump(cr["spec"]))
    assert run(tool("promtool"), "check", "rules", str(spec)).returncode == 0


def test_promtool_unit_tests_pass() -> None:
    tests = sorted(str(p) for p in (ALERTS / "tests").glob("*.test.yml"))
    res = run(tool("promtool"), "test", "rules", *tests)
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    for path in (ALERTS / "tests").glob("*.test.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {r["alert"] for r in rules()}
    assert names - fired == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested silent (below threshold / before for)"


def test_every_alert_has_for_severity_and_annotations() -> None:
    docs = (ROOT / "docs" / "rollback.md").read_text().lower()
    for r in rules():
        assert r.get("for"), r["alert"]
        assert r["labels"]["severity"] in SEVERITIES, r["alert"]
        ann = r["annotations"]
        assert ann["summary"] and ann["description"], r["alert"]
        anchor = ann["runbook_url"].rsplit("#", 1)[1]
        assert anchor == r["alert"].lower()
        assert f"### {r['alert'].lower()}" in docs, f"no runbook section for {r['alert']}"


def test_rollback_alerts_carry_the_labels_that_name_their_target() -> None:
    rollback = {r["alert"] for r in rules() if r["labels"].get("action") == "rollback"}
    assert rollback == {
        "VigilInputDriftDetected",
        "VigilGPUMemoryFull",
        "VigilInferenceProbeTimeouts",
        "VigilInferenceErrorRatio",
    }
    for path in (ALERTS / "tests").glob("*.test.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                for exp in check.get("exp_alerts") or []:
                    labels = set(exp["exp_labels"])
                    if check["alertname"] in rollback:
                        assert any(s <= labels for s in TARGET_LABEL_SETS), check["alertname"]
                    else:
                        assert "action" not in labels


def test_rules_read_only_contract_metrics() -> None:
    used = set()
    recorded = {r["record"] for r in records()}
    for r in [*rules(), *records()]:
        expr = re.sub(r'\{[^}]*\}|\[[^\]]*\]|"[^"]*"', "", r["expr"])
        # A recorded series (level:metric:operations) is read from this file, not the agent.
        read = set(re.findall(r"\b[a-z][a-z0-9_]*:[a-z0-9_]+:[a-z0-9_]+\b", expr))
        assert read <= recorded, (r.get("alert") or r["record"], read - recorded)
        for name in read:
            expr = expr.replace(name, "")
        used |= {m for m in re.findall(r"\b(vigil_[a-z0-9_]+|up)\b", expr)}
    assert used, "no metric found in the rules"
    assert used <= contract(), used - contract()


def test_an_alert_reads_recorded_series_only_of_its_own_group_recorded_before_it() -> None:
    """Rules of one group run in order at one evaluation time: an alert that reads a series
    recorded earlier in its group sees this evaluation's value, exactly what it computed
    when the expression was inline. From another group it would lag by up to an interval
    (an alert's `for` then starts late, and alerts/tests/ catches it at its boundary)."""
    doc = yaml.safe_load(RULES.read_text())
    checked = 0
    for g in doc["groups"]:
        before: set[str] = set()
        for r in g["rules"]:
            if "record" in r:
                before.add(r["record"])
                continue
            read = set(re.findall(r"\b[a-z][a-z0-9_]*:[a-z0-9_]+:[a-z0-9_]+\b", r["expr"]))
            assert read <= before, (r["alert"], read - before)
            checked += len(read)
    assert checked, "no alert reads a recorded series"


def test_no_threshold_is_written_outside_thresholds_yml() -> None:
    template = (ALERTS / "rules.tmpl.yml").read_text()
    exprs = re.findall(r"expr: (?:>-\n)?((?:.|\n)*?)\n\s+for:", template)
    assert len(exprs) == len(rules()), "every alert of the template was read"
    for expr in exprs:
        # p99, boolean series (== 0 or 1) and "any increase" (> 0) are not thresholds
        bare = re.sub(r"histogram_quantile\(0\.99|== [01]\b|> 0\b", "", expr)
        assert not re.search(r"[<>]=?\s*[0-9]", bare), expr
        assert not re.search(r"\[[0-9]", bare), expr


def test_generator_refuses_unknown_and_unused_names(tmp_path: Path) -> None:
    gen = gen_alerts()
    assert gen.render("a: ${x}", {"x": 1}) == "a: 1"
    with pytest.raises(gen.GenError, match=r"\$\{y\} is not defined"):
        gen.render("a: ${y}", {"x": 1})
    with pytest.raises(gen.GenError, match="not used by any rule: z"):
        gen.render("a: ${x}", {"x": 1, "z": 2})
    assert "{{ $labels.gpu }}" in gen.render("s: {{ $labels.gpu }} ${x}", {"x": 1})


def test_the_fast_variant_changes_only_for(tmp_path: Path) -> None:
    out = tmp_path / "fast.yml"
    res = run(sys.executable, "scripts/gen-alerts", "--for", "2s", "-o", str(out))
    assert res.returncode == 0, res.stderr
    fast = yaml.safe_load(out.read_text())
    prod = yaml.safe_load(RULES.read_text())
    for g_fast, g_prod in zip(fast["groups"], prod["groups"], strict=True):
        for r_fast, r_prod in zip(g_fast["rules"], g_prod["rules"], strict=True):
            if "record" in r_prod:
                assert r_fast == r_prod
                continue
            assert r_fast.pop("for") == "2s"
            r_prod.pop("for")
            assert r_fast == r_prod
    assert run(tool("promtool"), "check", "rules", str(out)).returncode == 0


def test_amtool_accepts_the_alertmanager_example(tmp_path: Path) -> None:
    res = run(tool("amtool"), "check-config", str(ALERTS / "alertmanager.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    cfg = yaml.safe_load((ALERTS / "alertmanager.yml").read_text())
    (route,) = [r for r in cfg["route"]["routes"] if r["receiver"] == "vigil-rollback"]
    assert route["matchers"] == ['action="rollback"']
    (hook,) = next(r for r in cfg["receivers"] if r["name"] == "vigil-rollback")["webhook_configs"]
    assert hook["url"].endswith(":9476/v1/alerts") and hook["send_resolved"] is True
    assert hook["http_config"]["authorization"]["type"] == "Bearer"


def test_amtool_routes_rollback_alerts_to_the_controller() -> None:
    def route(*labels: str) -> str:
        res = run(
            tool("amtool"),
            "config",
            "routes",
            "test",
            f"--config.file={ALERTS / 'alertmanager.yml'}",
            *labels,
        )
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    assert route("alertname=VigilInputDriftDetected", "action=rollback", "severity=critical") == (
        "vigil-rollback,on-call"
    )
    assert route("alertname=VigilGPULost", "severity=critical") == "on-call"
