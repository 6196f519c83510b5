"""The controller acts only on what it was told it may act on, and its failures show.

Each test replays an attempt that used to succeed against the real controller process:
a quoted boolean read as true, one release directory rolled back for any model's or any
GPU's alert, a Deployment rolled back in any namespace without its owners' consent,
labels that no environment can hold, a corrupt journal behind a ready /readyz, and an
outcome lost to a full disk.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentproc import http_get
from fake_kube import FakeKube, llm_fixture
from rbproc import (
    DRIFT,
    ControllerProcess,
    alert,
    live,
    payload,
    release_dir,
    run_controller,
    wait_for,
)

from agent.collectors import SPECS
from agent.config import ConfigError, load_yaml

GPU = {"action": "rollback", "gpu": "0", "uuid": "GPU-aaaa", "instance": "n1:9475"}


def write_config(path: Path, doc: dict[str, object]) -> Path:
    path.write_text(json.dumps(doc))  # JSON is YAML; no quoting surprises in the test itself
    return path


# --- booleans are booleans ------------------------------------------------------------------


@pytest.mark.parametrize("key", ["insecure_no_auth", "dry_run"])
@pytest.mark.parametrize("text", ['"false"', "'true'", "no_thanks", "0"])
def test_a_quoted_boolean_is_an_error_naming_the_key(tmp_path: Path, key: str, text: str) -> None:
    root = release_dir(tmp_path / "demo", ["v1", "v2"])
    cfg = tmp_path / "rollback.yaml"
    cfg.write_text(f"release_dir: {root}\n{key}: {text}\n")
    res = run_controller(["--config", str(cfg), "--state-dir", str(tmp_path / "s")])
    assert res.returncode == 2, res.stderr
    assert f"{cfg}: {key}:" in res.stderr and "not a boolean" in res.stderr
    assert "Traceback" not in res.stderr
    assert live(root) == "v2"


def test_insecure_no_auth_false_keeps_the_token_required(tmp_path: Path) -> None:
    root = release_dir(tmp_path / "demo", ["v1", "v2"])
    cfg = tmp_path / "rollback.yaml"
    cfg.write_text(f"release_dir: {root}\ninsecure_no_auth: false\ndry_run: false\n")
    with ControllerProcess(["--config", str(cfg)], tmp_path / "s") as c:
        status, body = c.post(payload(alert(DRIFT)), token=None)
        assert status == 401, body
    assert live(root) == "v2"


def test_the_agent_config_refuses_a_quoted_boolean_too(tmp_path: Path) -> None:
    path = tmp_path / "vigil.yaml"
    path.write_text('collectors:\n  gpu:\n    enabled: "false"\n')
    with pytest.raises(ConfigError, match=r"collector\.gpu: 'false' is not a boolean"):
        load_yaml(str(path), SPECS)
    path.write_text("collectors:\n  gpu:\n    enabled: false\n")
    assert load_yaml(str(path), SPECS) == {"collector.gpu": False}


# --- a release directory serves one model ---------------------------------------------------


def test_release_dir_acts_only_on_its_own_models_alerts(tmp_path: Path) -> None:
    root = release_dir(tmp_path / "demo", ["v1", "v2", "v3"])
    with ControllerProcess(["--release-dir", str(root)], tmp_path / "s") as c:
        fraud = alert({**DRIFT, "model": "fraud"}, fingerprint="fraud")
        gpu = alert(GPU, fingerprint="gpu")
        unnamed = alert({"action": "rollback"}, fingerprint="none")
        status, body = c.post(payload(fraud, gpu, unnamed))
        # Answered 2xx, so Alertmanager does not retry, and counted.
        assert status == 200, body
        assert [a["result"] for a in body["alerts"]] == ["no_target"] * 3
        assert "model=fraud" in body["alerts"][0]["detail"]
        assert c.metric("vigil_rollback_alerts_total", result="no_target") == 3
        time.sleep(0.5)
        assert c.rollbacks() == [] and live(root) == "v3"
        assert "no policy rule matches" in c.logs()
        # Its own model still rolls it back.
        status, body = c.post(payload(alert(DRIFT)))
        assert body["alerts"][0]["result"] == "accepted"
        c.wait_done()
        assert live(root) == "v2"


def test_model_flag_names_the_model_of_the_directory(tmp_path: Path) -> None:
    root = release_dir(tmp_path / "current-release", ["v1", "v2", "v3"])
    with ControllerProcess(["--release-dir", str(root), "--model", "fraud"], tmp_path / "s") as c:
        _, body = c.post(payload(alert(DRIFT, fingerprint="demo")))
        assert body["alerts"][0]["result"] == "no_target"
        _, body = c.post(payload(alert({**DRIFT, "model": "fraud"}, fingerprint="fraud")))
        assert body["alerts"][0]["result"] == "accepted"
        c.wait_done()
    assert live(root) == "v2"


def test_a_model_name_that_is_not_a_name_is_a_usage_error(tmp_path: Path) -> None:
    res = run_controller(["--release-dir", str(tmp_path), "--model", "../x"])
    assert res.returncode == 2 and "model: '../x' is not a model name" in res.stderr


# --- Kubernetes: an allow-list of namespaces and an opt-in label ----------------------------


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube() as k:
        yield k


def kube_config(tmp_path: Path, kube: FakeKube) -> Path:
    return write_config(
        tmp_path / "rollback.yaml",
        {
            "targets": {
                "deployment": {
                    "action": "kubernetes",
                    "namespace": "{namespace}",
                    "deployment": "{workload}",
                    "allowed_namespaces": ["inference"],
                    "kubeconfig": str(kube.kubeconfig(tmp_path / "kc")),
                }
            },
            "policy": [{"match": {"workload_kind": "Deployment"}, "target": "deployment"}],
        },
    )


def workload_alert(namespace: str, name: str = "llm", fingerprint: str = "w") -> dict[str, object]:
    labels = {
        "action": "rollback",
        "namespace": namespace,
        "workload_kind": "Deployment",
        "workload": name,
    }
    return alert(labels, fingerprint=fingerprint)


def test_a_namespace_outside_the_allow_list_is_refused_before_the_api(
    tmp_path: Path, kube: FakeKube
) -> None:
    llm_fixture(kube, namespace="kube-system")
    with ControllerProcess(["--config", str(kube_config(tmp_path, kube))], tmp_path / "s") as c:
        status, body = c.post(payload(workload_alert("kube-system")))
        assert status == 200, body
        (got,) = body["alerts"]
        assert got["result"] == "refused"
        assert "namespace 'kube-system' is not in allowed_namespaces (inference)" in got["detail"]
        assert c.metric("vigil_rollback_alerts_total", result="refused") == 1
        assert c.rollbacks() == []
        assert "refused" in c.logs()
    assert kube.requests == [], "not even read"


def test_a_deployment_that_has_not_opted_in_is_refused(tmp_path: Path, kube: FakeKube) -> None:
    llm_fixture(kube, opted_in=False)
    with ControllerProcess(["--config", str(kube_config(tmp_path, kube))], tmp_path / "s") as c:
        _, body = c.post(payload(workload_alert("inference")))
        assert body["alerts"][0]["result"] == "accepted"
        (rb,) = c.wait_done()
        assert rb["result"] == "refused"
        assert 'lacks the label vigil.dev/rollback: "enabled"' in rb["detail"]
        assert (
            c.metric(
                "vigil_rollbacks_total",
                target="deployment:inference/llm",
                action="kubernetes",
                result="refused",
            )
            == 1
        )
    assert kube.patches() == []
    dep = kube.deployments[("inference", "llm")]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "llm:v3"


def test_an_opted_in_deployment_in_an_allowed_namespace_is_rolled_back(
    tmp_path: Path, kube: FakeKube
) -> None:
    llm_fixture(kube)
    with ControllerProcess(["--config", str(kube_config(tmp_path, kube))], tmp_path / "s") as c:
        c.post(payload(workload_alert("inference")))
        (rb,) = c.wait_done()
        assert rb["result"] == "succeeded", rb["detail"]
    dep = kube.deployments[("inference", "llm")]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "llm:v2"


@pytest.mark.parametrize("change", ["narrowed", "removed"])
def test_narrowing_the_config_stops_a_rollback_already_journaled(
    tmp_path: Path, kube: FakeKube, change: str
) -> None:
    """Decided under a wide allow-list, crashed before acting, restarted under a narrow one
    (or without the target): the resumed row is refused, counted, and nothing is patched."""
    from agent.rollback.controller import FAILPOINT_EXIT

    llm_fixture(kube, namespace="payments")
    kubeconfig = str(kube.kubeconfig(tmp_path / "kc"))

    def config(name: str, allowed: list[str]) -> Path:
        target = {
            "action": "kubernetes",
            "namespace": "{namespace}",
            "deployment": "{workload}",
            "allowed_namespaces": allowed,
            "kubeconfig": kubeconfig,
        }
        return write_config(
            tmp_path / f"{name}.yaml",
            {
                "targets": {name: target},
                "policy": [{"match": {"workload_kind": "Deployment"}, "target": name}],
            },
        )

    wide = config("deployment", ["inference", "payments"])
    state = tmp_path / "s"
    crashing = ControllerProcess(
        ["--config", str(wide)], state, env={"VIGIL_ROLLBACK_FAILPOINT": "before-action"}
    ).start()
    _, body = crashing.post(payload(workload_alert("payments")))
    assert body["alerts"][0]["result"] == "accepted", body
    assert crashing.proc is not None
    assert crashing.proc.wait(10) == FAILPOINT_EXIT, crashing.logs()
    assert kube.patches() == []

    narrow = (
        config("deployment", ["inference"])
        if change == "narrowed"
        else config("llm", ["inference", "payments"])
    )
    with ControllerProcess(["--config", str(narrow)], state, port=crashing.port) as c:
        (rb,) = c.wait_done()
        assert rb["result"] == "refused", rb
        assert "allowed_namespaces" not in rb["params"], "the allow-list is not journaled"
        if change == "narrowed":
            assert "'payments' is not in allowed_namespaces (inference)" in rb["detail"]
        else:
            assert "'deployment' is no longer in the configuration" in rb["detail"]
        refused = c.metric(
            "vigil_rollbacks_total",
            target="deployment:payments/llm",
            action="kubernetes",
            result="refused",
        )
        assert refused == 1
    assert kube.patches() == []
    dep = kube.deployments[("payments", "llm")]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "llm:v3"


def test_the_action_checks_the_allow_list_itself(tmp_path: Path, kube: FakeKube) -> None:
    """The allow-list the action is given wins over one a journal row may still carry."""
    from agent.rollback.actions.base import Refused
    from agent.rollback.actions.kubernetes import KubernetesDeploymentAction

    llm_fixture(kube, namespace="payments")
    row = {
        "namespace": "payments",
        "deployment": "llm",
        "allowed_namespaces": ["payments"],  # as rows journaled by earlier versions held it
        "kubeconfig": str(kube.kubeconfig(tmp_path / "kc")),
    }
    a = KubernetesDeploymentAction(row, ["inference"])
    with pytest.raises(Refused, match=r"'payments' is not in allowed_namespaces \(inference\)"):
        a.plan()
    assert kube.requests == []


def test_kubernetes_target_needs_an_allow_list_of_plain_names(tmp_path: Path) -> None:
    for namespaces, message in (
        (None, "needs allowed_namespaces"),
        ([], "non-empty list"),
        (["{namespace}"], "is not a namespace name"),
    ):
        target: dict[str, object] = {
            "action": "kubernetes",
            "namespace": "{namespace}",
            "deployment": "{workload}",
        }
        if namespaces is not None:
            target["allowed_namespaces"] = namespaces
        cfg = write_config(
            tmp_path / "c.yaml", {"targets": {"k": target}, "policy": [{"target": "k"}]}
        )
        res = run_controller(["--config", str(cfg), "--state-dir", str(tmp_path / "s")])
        assert res.returncode == 2 and message in res.stderr, res.stderr


# --- command action: labels that cannot be environment variables ----------------------------


def test_labels_no_environment_can_hold_are_refused_before_anything_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    cfg = write_config(
        tmp_path / "rollback.yaml",
        {
            "targets": {
                "hook": {
                    "action": "command",
                    "argv": [sys.executable, "-c", f"open({str(marker)!r}, 'w')"],
                }
            },
            "policy": [{"match": {"action": "rollback"}, "target": "hook"}],
        },
    )
    with ControllerProcess(["--config", str(cfg)], tmp_path / "s") as c:
        bad_name = alert({**GPU, "a=b": "1"}, fingerprint="eq")
        bad_value = alert({**GPU, "model": "de\u0000mo"}, fingerprint="nul")
        status, body = c.post(payload(bad_name, bad_value))
        assert status == 200, body
        details = [a["detail"] for a in body["alerts"]]
        assert [a["result"] for a in body["alerts"]] == ["refused", "refused"]
        assert "label 'a=b' cannot be passed as VIGIL_LABEL_<NAME>" in details[0]
        assert "label 'model' has a NUL byte" in details[1]
        assert c.metric("vigil_rollback_alerts_total", result="refused") == 2
        time.sleep(0.5)
        assert c.rollbacks() == [] and not marker.exists()
        # A clean alert still runs the hook.
        c.post(payload(alert(GPU, fingerprint="ok")))
        (rb,) = c.wait_done()
        assert rb["result"] == "succeeded" and marker.exists()
        assert "ValueError" not in c.logs()


def test_configured_env_names_are_checked_at_start(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "rollback.yaml",
        {
            "targets": {"hook": {"action": "command", "argv": ["/bin/true"], "env": {"A=B": "1"}}},
            "policy": [{"target": "hook"}],
        },
    )
    res = run_controller(["--config", str(cfg), "--state-dir", str(tmp_path / "s")])
    assert res.returncode == 2 and "targets.hook.env.A=B" in res.stderr, res.stderr


# --- a corrupt journal is not ready, and says which file and what to do ---------------------


def corrupt_table_page(db: Path, table: str) -> None:
    """Overwrites the root page of ``table`` with garbage, as a bad disk block would."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (root,) = con.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (table,)).fetchone()
    (page_size,) = con.execute("PRAGMA page_size").fetchone()
    con.close()
    with open(db, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(bytes((i * 37 + 11) % 256 for i in range(page_size)))


def assert_not_ready_with_the_fix(c: ControllerProcess, journal: Path) -> None:
    status, text = http_get(c.url + "/readyz")
    assert status == 503, text
    assert f"journal {journal} is corrupt" in text
    assert f"mv {journal} {journal}.corrupt" in text and "history is lost" in text
    status, body = c.post(payload(alert(DRIFT, fingerprint="after")))
    assert status == 503 and str(journal) in body["error"], body
    headers = {"Authorization": f"Bearer {c.token}"}
    status, text = http_get(c.url + "/v1/rollbacks", headers=headers)
    assert status == 503 and str(journal) in text, text
    assert c.proc is not None and c.proc.poll() is None, "still running, to say so"
    assert "unexpected error" not in c.logs() and "Traceback" not in c.logs()


def wait_alive(c: ControllerProcess) -> None:
    """Until the controller answers /healthz: alive, though (here) not ready."""

    def alive() -> bool:
        try:
            return http_get(c.url + "/healthz", timeout=1.0)[0] == 200
        except OSError:
            return False

    wait_for("controller /healthz", alive, 20, c.logs)


def test_a_corrupt_rollbacks_page_fails_readyz_with_the_path_and_the_fix(tmp_path: Path) -> None:
    root = release_dir(tmp_path / "demo", ["v1", "v2", "v3"])
    state = tmp_path / "s"
    journal = state / "rollback-journal.db"
    c = ControllerProcess(["--release-dir", str(root)], state)
    with c:
        c.post(payload(alert(DRIFT)))
        c.wait_done()
    corrupt_table_page(journal, "rollbacks")
    c.start(wait=False)
    try:
        wait_alive(c)
        assert_not_ready_with_the_fix(c, journal)
        assert "cannot resume unfinished rollbacks" in c.logs()
    finally:
        c.stop()


def test_a_file_that_is_not_a_database_is_reported_the_same_way(tmp_path: Path) -> None:
    root = release_dir(tmp_path / "demo", ["v1", "v2", "v3"])
    state = tmp_path / "s"
    state.mkdir()
    journal = state / "rollback-journal.db"
    journal.write_bytes(b"\x00garbage" * 2000)
    c = ControllerProcess(["--release-dir", str(root)], state)
    c.start(wait=False)
    try:
        wait_alive(c)
        assert_not_ready_with_the_fix(c, journal)
    finally:
        c.stop()
    assert live(root) == "v3"


# --- the outcome after the action is journaled even when the disk filled up ----------------

FILL = """
import os, sys
path = os.path.join(sys.argv[1], "filler")
with open(path, "wb", buffering=0) as f:
    for size in (1 << 16, 4096, 1):
        try:
            while True:
                f.write(b"x" * size)
        except OSError:
            pass
print("filled", os.path.getsize(path))
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs (root only: mounting is what makes the disk really fill up)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.fail(f"this test mounts a tmpfs and needs root: {res.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_an_outcome_that_meets_a_full_disk_is_counted_and_retried(
    tmp_path: Path, small_disk: Path
) -> None:
    state = small_disk / "state"
    cfg = write_config(
        tmp_path / "rollback.yaml",
        {
            "targets": {
                "hook": {"action": "command", "argv": [sys.executable, "-c", FILL, str(small_disk)]}
            },
            "policy": [{"match": {"gpu": "0"}, "target": "hook"}],
        },
    )
    c = ControllerProcess(["--config", str(cfg)], state)
    c.log_path = tmp_path / "controller.log"  # the log must not share the full disk
    with c:
        _, body = c.post(payload(alert(GPU)))
        assert body["alerts"][0]["result"] == "accepted"
        labels = {"target": "command:hook", "action": "command", "result": "succeeded"}

        def counted() -> bool:
            return (
                c.metric("vigil_rollbacks_total", **labels) == 1
                and c.metric("vigil_rollback_outcomes_unrecorded") == 1
            )

        deadline = time.monotonic() + 30
        while not counted():
            assert time.monotonic() < deadline, c.logs()
            time.sleep(0.1)
        # Done and counted, not yet on disk: the row says so, and /readyz says why.
        (rb,) = c.rollbacks()
        assert rb["state"] == "started" and rb["result"] == "succeeded"
        assert rb["recorded"] is False and "full" in rb["journal_error"]
        status, text = http_get(c.url + "/readyz")
        assert status == 503 and "not journaled yet" in text and str(state) in text, text
        assert "cannot journal the outcome of a rollback; retrying" in c.logs()

        (small_disk / "filler").unlink()
        deadline = time.monotonic() + 60
        while True:
            (rb,) = c.rollbacks()
            if rb["state"] == "done":
                break
            assert time.monotonic() < deadline, c.logs()
            time.sleep(0.2)
        assert rb["result"] == "succeeded" and "recorded" not in rb
        assert c.metric("vigil_rollback_outcomes_unrecorded") == 0
        assert c.metric("vigil_rollbacks_total", **labels) == 1, "counted once"
        assert http_get(c.url + "/readyz")[0] == 200
    # And it is durable: a new controller finds it done and does not run the hook again.
    assert os.path.exists(state / "rollback-journal.db")
    again = ControllerProcess(["--config", str(cfg)], state)
    again.log_path = tmp_path / "again.log"
    with again:
        (rb,) = again.rollbacks()
        assert rb["state"] == "done"
        assert not (small_disk / "filler").exists()


def test_the_controllers_metrics_are_catalogued(tmp_path: Path) -> None:
    from catalogue import load_catalogue, undocumented

    root = release_dir(tmp_path / "demo", ["v1", "v2"])
    with ControllerProcess(["--release-dir", str(root)], tmp_path / "s") as c:
        c.post(payload(alert(DRIFT)))
        c.wait_done()
        _, text = http_get(c.url + "/metrics")
    assert "vigil_rollback_outcomes_unrecorded 0.0" in text
    assert undocumented(text, load_catalogue()) == []


@pytest.mark.parametrize(
    ("labels", "extra", "problem"),
    [
        ({"model": "demo", "gpu_0": "x", "_a": ""}, {"VIGIL_ROLLBACK_REASON": "r"}, ""),
        ({"a=b": "1"}, {}, "label 'a=b' cannot be passed"),
        ({"a b": "1"}, {}, "label 'a b' cannot be passed"),
        ({"0a": "1"}, {}, "label '0a' cannot be passed"),
        ({"": "1"}, {}, "label '' cannot be passed"),
        ({"model": "x\x00y"}, {}, "label 'model' has a NUL byte"),
        ({"model": "x"}, {"VIGIL_ROLLBACK_REASON": "a\x00"}, "VIGIL_ROLLBACK_REASON would hold"),
    ],
)
def test_label_env_problem(labels: dict[str, str], extra: dict[str, str], problem: str) -> None:
    from agent.rollback.actions.command import label_env_problem

    got = label_env_problem(labels, extra)
    assert (got == "") if not problem else got.startswith(problem), got


@pytest.mark.parametrize(
    ("namespace", "allowed", "refused"),
    [
        ("inference", ["inference", "b"], False),
        ("b", ["inference", "b"], False),
        ("kube-system", ["inference"], True),
        ("inference", None, True),
        ("inference", [], True),
    ],
)
def test_admit_checks_the_allow_list_of_the_target(
    namespace: str, allowed: list[str] | None, refused: bool
) -> None:
    from agent.rollback.policy import TargetSpec, admit

    target = TargetSpec("k", "kubernetes", {"allowed_namespaces": allowed})
    # The alert's filled parameters cannot bring their own allow-list.
    params = {"namespace": namespace, "allowed_namespaces": [namespace]}
    assert bool(admit(target, params)) is refused
    for action in ("release_dir", "command"):
        assert admit(TargetSpec("x", action, {}), params) == ""


def test_recheck_holds_a_decided_rollback_to_the_configuration_of_now() -> None:
    from agent.rollback.policy import TargetSpec, recheck

    labels = {"namespace": "payments", "workload": "llm", "model": "m"}
    k8s = {"namespace": "{namespace}", "deployment": "{workload}"}
    row = {"namespace": "payments", "deployment": "llm"}
    wide = TargetSpec("d", "kubernetes", {**k8s, "allowed_namespaces": ["payments"]})
    narrow = TargetSpec("d", "kubernetes", {**k8s, "allowed_namespaces": ["inference"]})
    assert recheck(wide, labels, row) == ""
    # A row journaled by an earlier version with its own list: today's list decides.
    assert recheck(wide, labels, {**row, "allowed_namespaces": ["x"]}) == ""
    assert "not in allowed_namespaces (inference)" in recheck(narrow, labels, row)
    assert "no longer in the configuration" in recheck(None, labels, row)
    moved = TargetSpec(
        "d", "kubernetes", {**k8s, "deployment": "other", "allowed_namespaces": ["payments"]}
    )
    assert "configured differently" in recheck(moved, labels, row)
    release = TargetSpec("r", "release_dir", {"path": "/srv/models/{model}"})
    assert recheck(release, labels, {"path": "/srv/models/m"}) == ""
    assert "configured differently" in recheck(release, labels, {"path": "/srv/old/m"})
    assert "configured differently" in recheck(release, {}, {"path": "/srv/models/m"})
