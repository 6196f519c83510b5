"""A token file is a secret only if nobody else could have written or read it.

The attempt replayed here: another local user creates the state directory a non-root
agent will use (``./var`` by default) and plants ``ingest-token`` with a value they know,
or a rollback token; or an operator leaves a token file readable by every user. Both
servers used to take such a file as it was.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from agentproc import AgentProcess
from rbproc import ControllerProcess, release_dir, run_controller

from agent import auth

QUICK = ["--no-collector.sched", "--no-collector.gpu", "--no-collector.profile"]
NOBODY = 65534
ME, MY_GROUP = 1000, 1000


@pytest.mark.parametrize(
    ("mode", "uid", "gid", "problem"),
    [
        (0o600, ME, MY_GROUP, ""),
        (0o400, ME, MY_GROUP, ""),
        (0o100600, ME, 0, ""),  # st_mode carries the file type too
        (0o640, ME, MY_GROUP, ""),  # group-readable by the process's own group only
        (0o440, 0, MY_GROUP, ""),  # a Secret volume with fsGroup: root-owned, 0440
        (0o400, 0, 0, ""),  # a Secret volume with defaultMode 0400, pod running as root
        (0o600, NOBODY, MY_GROUP, "belongs to uid 65534"),  # planted by someone else
        (0o644, ME, MY_GROUP, "readable by others (mode 0644)"),
        (0o604, ME, MY_GROUP, "readable by others"),
        (0o644, 0, 0, "readable by others"),  # a Secret volume's default mode
        (0o640, ME, 50, "readable by group 50"),
        (0o620, ME, MY_GROUP, "writable by its group"),
        (0o602, ME, MY_GROUP, "writable by others"),
        (0o666, 0, MY_GROUP, "writable by others"),
    ],
)
def test_token_file_problem(mode: int, uid: int, gid: int, problem: str) -> None:
    got = auth.token_file_problem(mode, uid, gid, ME, MY_GROUP)
    assert (got == "") if not problem else problem in got, got


def planted(path: Path, token: str, uid: int = NOBODY, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token + "\n")
    os.chown(path, uid, uid)
    path.chmod(mode)
    return path


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


@needs_root
def test_token_file_of_another_user_or_readable_by_all_is_refused_then_fixed(
    tmp_path: Path,
) -> None:
    path = planted(tmp_path / "token", "known-to-them")
    bearer = auth.BearerAuth(token_file=auth.TokenFile(path))
    refusal = bearer.problem("Bearer known-to-them")
    assert refusal is not None and refusal.status == 503
    assert f"token file {path} belongs to uid {NOBODY}" in refusal.message
    assert f"chown {os.geteuid()} {path} && chmod 600 {path}" in refusal.message
    os.chown(path, os.geteuid(), os.getegid())
    refusal = bearer.problem("Bearer known-to-them")
    assert refusal is not None and refusal.status == 503
    assert "readable by others (mode 0644)" in refusal.message
    assert f"chmod 600 {path}" in refusal.message
    path.chmod(0o600)  # the content did not change: the mode is checked on every read
    assert bearer.problem("Bearer known-to-them") is None


@needs_root
def test_agent_refuses_a_token_planted_in_its_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "var"
    state.mkdir(mode=0o777)
    os.chown(state, NOBODY, NOBODY)  # someone else made the directory first
    token = planted(state / auth.INGEST_TOKEN_NAME, "known-to-them")
    with AgentProcess([*QUICK, "--state-dir", str(state)]) as a:
        status, body = a.get("/v1/drift", headers={"Authorization": "Bearer known-to-them"})
        assert status == 503, body
        error = json.loads(body)["error"]
        assert str(token) in error and "belongs to uid 65534" in error
        # Once, at start, in the log: the file and the fix.
        logs = a.logs()
        assert logs.count("API token unusable") == 1, logs
        assert f"chmod 600 {token}" in logs
    assert token.read_text() == "known-to-them\n", "left for a person to look at"


def test_agent_and_controller_create_their_state_dirs_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        fresh = tmp_path / "agent" / "state"
        token = tmp_path / "given-token"
        token.write_text("t\n")
        token.chmod(0o600)
        # With a token given, nothing token-related creates the directory either.
        with AgentProcess([*QUICK, "--state-dir", str(fresh), "--ingest-token-file", str(token)]):
            pass
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o700

        root = release_dir(tmp_path / "demo", ["v1", "v2"])
        journal = tmp_path / "controller" / "journal-dir" / "journal.db"
        cfg = tmp_path / "rollback.yaml"
        cfg.write_text(json.dumps({"release_dir": str(root), "journal": str(journal)}))
        with ControllerProcess(["--config", str(cfg)], tmp_path / "controller-state"):
            pass
        assert stat.S_IMODE(journal.parent.stat().st_mode) == 0o700
        generated = tmp_path / "generated" / "state"
        with ControllerProcess(["--release-dir", str(root)], generated, token=None) as c:
            assert c.post({}, token=None)[0] == 401
        # The helper made that one (0755 here); the token in it is 0600 all the same.
        assert stat.S_IMODE((generated / "rollback-token").stat().st_mode) == 0o600
    finally:
        os.umask(old)


@needs_root
def test_controller_refuses_to_start_on_a_planted_or_shared_token(tmp_path: Path) -> None:
    root = release_dir(tmp_path / "demo", ["v1", "v2"])
    state = tmp_path / "state"
    generated = planted(state / "rollback-token", "known-to-them")
    res = run_controller(["--release-dir", str(root), "--state-dir", str(state)])
    assert res.returncode == 2, res.stderr
    assert f"token file {generated} belongs to uid {NOBODY}" in res.stderr
    assert "chmod 600" in res.stderr and "Traceback" not in res.stderr

    given = planted(tmp_path / "given", "shared", uid=os.geteuid(), mode=0o644)
    res = run_controller(
        ["--release-dir", str(root), "--state-dir", str(state), "--token-file", str(given)]
    )
    assert res.returncode == 2, res.stderr
    assert "--token-file" in res.stderr and "readable by others (mode 0644)" in res.stderr
    assert f"chmod 600 {given}" in res.stderr


@pytest.mark.parametrize(
    ("manifest", "kind"),
    [("agent-daemonset.yaml", "DaemonSet"), ("rollback-controller.yaml", "Deployment")],
)
def test_the_shipped_secret_mounts_pass_the_check(manifest: str, kind: str) -> None:
    """The file a Secret volume shows the pod, as the kubelet makes it: owned by root, group
    fsGroup (else root), mode defaultMode (0644 when unset), with 0440 added for fsGroup."""
    import yaml

    root = Path(__file__).resolve().parents[2]
    docs = yaml.safe_load_all((root / "deploy" / manifest).read_text())
    (workload,) = [d for d in docs if d and d.get("kind") == kind]
    pod = workload["spec"]["template"]["spec"]
    pod_ctx = pod.get("securityContext") or {}
    volumes = [
        v for v in pod["volumes"] if (v.get("secret") or {}).get("secretName") == "vigil-tokens"
    ]
    assert volumes, "the token Secret is mounted"
    (container,) = pod["containers"]
    ctx = {**pod_ctx, **(container.get("securityContext") or {})}
    euid, egid = ctx.get("runAsUser", 0), ctx.get("runAsGroup", 0)
    fs_group = pod_ctx.get("fsGroup")
    for volume in volumes:
        mode = volume["secret"].get("defaultMode", 0o644)
        if fs_group is not None:
            mode |= 0o440
        gid = fs_group if fs_group is not None else 0
        assert auth.token_file_problem(mode, 0, gid, euid, egid) == "", (manifest, oct(mode))
