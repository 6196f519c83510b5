"""Policy: which alert acts on which target, with targets filled from labels."""

from __future__ import annotations

import re

from agent.rollback.policy import Ignored, Resolved, Rule, TargetSpec, resolve

TARGETS = {
    "models": TargetSpec("models", "release_dir", {"path": "/srv/models/{model}"}),
    "llm": TargetSpec(
        "llm",
        "kubernetes",
        {
            "namespace": "{namespace}",
            "deployment": "{deployment}",
            "allowed_namespaces": ["inference"],
        },
    ),
    "hook": TargetSpec("hook", "command", {"argv": ["/bin/true"]}),
}
RULES = [
    Rule("llm", match={"namespace": "inference"}),
    Rule("hook", match_re={"alertname": re.compile("VigilGPU.*")}),
    Rule("models", match_re={"model": re.compile(".+")}),
]


def test_first_matching_rule_names_the_target() -> None:
    got = resolve(
        {"action": "rollback", "namespace": "inference", "deployment": "llm", "model": "m"},
        RULES,
        TARGETS,
    )
    assert isinstance(got, Resolved)
    assert got.target == "deployment:inference/llm" and got.action == "kubernetes"


def test_placeholders_are_filled_from_labels() -> None:
    got = resolve({"action": "rollback", "model": "demo"}, RULES, TARGETS)
    assert isinstance(got, Resolved)
    assert (
        got.params == {"path": "/srv/models/demo"} and got.target == "release-dir:/srv/models/demo"
    )


def test_match_re_is_anchored() -> None:
    got = resolve({"action": "rollback", "alertname": "XVigilGPUMemoryFull"}, RULES[1:2], TARGETS)
    assert isinstance(got, Ignored) and got.reason.startswith("no policy rule matches")
    assert got.result == "no_target"
    got = resolve({"action": "rollback", "alertname": "VigilGPUMemoryFull"}, RULES[1:2], TARGETS)
    assert isinstance(got, Resolved) and got.target == "command:hook"


def test_only_rollback_alerts_act() -> None:
    got = resolve({"model": "demo", "action": "page"}, RULES, TARGETS)
    assert isinstance(got, Ignored) and 'action="rollback"' in got.reason


def test_a_missing_label_is_named() -> None:
    got = resolve({"action": "rollback", "namespace": "inference"}, RULES, TARGETS)
    assert isinstance(got, Ignored) and "'deployment'" in got.reason


def test_label_values_cannot_escape_a_path() -> None:
    for bad in ("../../etc", "a/b", ".hidden", ""):
        got = resolve({"action": "rollback", "model": bad}, RULES, TARGETS)
        assert isinstance(got, Ignored), bad
        assert re.search("not a plain name|no policy rule", got.reason)
