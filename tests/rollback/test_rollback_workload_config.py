"""The ``kubernetes_workload`` target in the controller's configuration: what it accepts,
and a usage error naming the key for anything else."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError
from agent.rollback.config import load
from agent.rollback.policy import Ignored, Resolved, resolve

BASE = (
    "targets:\n"
    "  served:\n"
    "    action: kubernetes_workload\n"
    "    namespace: '{namespace}'\n"
    "    allowed_namespaces: [inference]\n"
    "EXTRA"
    "policy: [{match_re: {namespace: '.+'}, target: served}]\n"
)


def config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "rollback.yaml"
    path.write_text(BASE.replace("EXTRA", extra))
    return path


def test_defaults_and_the_target_each_alert_resolves_to(tmp_path: Path) -> None:
    cfg = load(file=str(config(tmp_path, "    pod: '{pod}'\n")), env={})
    params = cfg.targets["served"].params
    assert params["kinds"] == ["Deployment", "Rollout", "StatefulSet", "InferenceService"]
    assert params["allow_partitioned"] is False and params["history_interval"] == 30.0
    labels = {"action": "rollback", "namespace": "inference", "pod": "llm-3abc-q8w9e"}
    got = resolve(labels, cfg.rules, cfg.targets)
    assert isinstance(got, Resolved) and got.target == "pod:inference/llm-3abc-q8w9e"
    # What the controller may do is read from the configuration when it acts, never
    # copied from the alert into the journal.
    assert set(got.params) == {"namespace", "pod"}
    outside = resolve({**labels, "namespace": "kube-system"}, cfg.rules, cfg.targets)
    assert isinstance(outside, Ignored) and outside.result == "refused"


def test_workload_labels_and_options(tmp_path: Path) -> None:
    extra = (
        "    workload_kind: '{workload_kind}'\n"
        "    workload: '{workload}'\n"
        "    kinds: [StatefulSet, Rollout]\n"
        "    allow_partitioned: true\n"
        "    history_interval: 2m\n"
    )
    cfg = load(file=str(config(tmp_path, extra)), env={})
    params = cfg.targets["served"].params
    assert params["kinds"] == ["StatefulSet", "Rollout"]
    assert params["allow_partitioned"] is True and params["history_interval"] == 120.0
    labels = {
        "action": "rollback",
        "namespace": "inference",
        "workload_kind": "StatefulSet",
        "workload": "shard",
    }
    got = resolve(labels, cfg.rules, cfg.targets)
    assert isinstance(got, Resolved) and got.target == "workload:inference/StatefulSet/shard"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("", "needs pod, or workload_kind and workload"),
        ("    pod: '{pod}'\n    workload: '{workload}'\n", "needs pod, or workload_kind and"),
        (
            "    pod: '{pod}'\n    kinds: [DaemonSet]\n",
            "targets.served.kinds: 'DaemonSet' not one of",
        ),
        ("    pod: '{pod}'\n    kinds: []\n", "targets.served.kinds: expected a non-empty list"),
        (
            "    pod: '{pod}'\n    allow_partitioned: 'yes'\n",
            "targets.served.allow_partitioned: 'yes' is not a boolean",
        ),
        ("    pod: '{pod}'\n    history_interval: 100ms\n", "history_interval: at least 1s"),
        ("    pod: '{pod}'\n    history_interval: often\n", "targets.served.history_interval"),
        ("    pod: '{pod}'\n    deployment: llm\n", "unknown key(s) deployment"),
        ("    pod: ''\n", "targets.served.pod: expected a non-empty string"),
    ],
)
def test_a_bad_target_is_a_usage_error_naming_the_key(
    tmp_path: Path, extra: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load(file=str(config(tmp_path, extra)), env={})
    assert message in str(err.value)


def test_the_cli_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main

    path = config(tmp_path, "    pod: '{pod}'\n    kinds: [Job]\n")
    code = main(["rollback-controller", "--config", str(path), "--state-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("vigil: error: ") and "kinds" in err
    assert "Traceback" not in err
