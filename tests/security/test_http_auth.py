"""Who may call the /v1 APIs: a token whatever the listen address, found without set-up.

Threat-model rows: 1 (a local user posts samples to a loopback agent), 5 (profiles and
drift state read without a token), 16 (the auth scheme's case).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agentproc import ROOT, AgentProcess, http_get, run_vigil
from prometheus_client.parser import text_string_to_metric_families
from rbproc import TOKEN, ControllerProcess, release_dir

from agent import auth
from agent.collectors import SPECS
from agent.collectors.drift.ks import ReferenceSample
from agent.collectors.drift.store import ReferenceStore
from agent.config import default_state_dir, resolve
from agent.drift import client
from agent.registry import Paths

QUICK = ["--no-collector.sched", "--no-collector.gpu"]
FEATURES = ("age", "income")


# --- pure parts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc", ("bearer", "abc")),
        ("bearer abc", ("bearer", "abc")),
        ("BEARER abc", ("bearer", "abc")),
        ("BeArEr   abc  ", ("bearer", "abc")),
        ("Basic dXNlcjpwdw==", ("basic", "dXNlcjpwdw==")),
        ("Bearer", None),
        ("Bearer ", None),
        ("", None),
        (None, None),
        ("abc", None),
    ],
)
def test_authorization_header_parsing(header: str | None, expected: Any) -> None:
    assert auth.parse_authorization(header) == expected


@pytest.mark.parametrize(
    ("header", "status", "message"),
    [
        ("Bearer s3cret", None, ""),
        ("bearer s3cret", None, ""),
        ("BEARER s3cret", None, ""),
        ("Bearer s3cret2", 401, "wrong bearer token"),
        ("Bearer s3cre", 401, "wrong bearer token"),
        ("Basic czNjcmV0", 401, "bearer token required"),
        ("s3cret", 401, "bearer token required"),
        (None, 401, "bearer token required"),
    ],
)
def test_bearer_check(header: str | None, status: int | None, message: str) -> None:
    refusal = auth.bearer_problem(header, "s3cret")
    if status is None:
        assert refusal is None
    else:
        assert refusal is not None and refusal.status == status and message in refusal.message


def test_token_file_is_reread_when_rotated_and_refuses_when_unusable(tmp_path: Path) -> None:
    path = tmp_path / "token"
    bearer = auth.BearerAuth(token_file=auth.TokenFile(path))
    refusal = bearer.problem("Bearer x")
    assert refusal is not None and refusal.status == 503 and str(path) in refusal.message
    path.write_text("one\n")
    path.chmod(0o600)
    assert bearer.problem("Bearer one") is None
    new = tmp_path / "token.new"
    new.write_text("two\n")
    new.chmod(0o600)
    new.replace(path)  # how rotation is done: a rename, never an in-place rewrite
    assert bearer.problem("Bearer one") is not None
    assert bearer.problem("Bearer two") is None
    path.write_text("")
    refusal = bearer.problem("Bearer two")
    assert refusal is not None and refusal.status == 503 and "empty" in refusal.message


def test_generated_token_is_0600_whole_and_never_replaced(tmp_path: Path) -> None:
    old = os.umask(0)  # even a permissive umask must not widen the mode
    try:
        path = tmp_path / "state" / auth.INGEST_TOKEN_NAME
        assert auth.ensure_token(path)
        first = path.read_text()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(first.strip()) >= 40 and first.endswith("\n")
        assert not auth.ensure_token(path)
        assert not auth.write_secret(path, "other\n")  # link refuses to overwrite
        assert path.read_text() == first
        assert [p.name for p in path.parent.iterdir()] == [auth.INGEST_TOKEN_NAME]
    finally:
        os.umask(old)


def test_concurrent_first_starts_share_one_token(tmp_path: Path) -> None:
    path = tmp_path / auth.INGEST_TOKEN_NAME
    made: list[bool] = []
    threads = [
        threading.Thread(target=lambda i=i: made.append(auth.write_secret(path, f"{i}\n")))
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert made.count(True) == 1
    assert [p.name for p in tmp_path.iterdir()] == [auth.INGEST_TOKEN_NAME]


def test_client_copies_of_the_token_location_agree_with_the_agent() -> None:
    assert client.TOKEN_NAME == auth.INGEST_TOKEN_NAME
    assert client.default_state_dirs()[0] == default_state_dir()


def test_client_token_lookup_order_and_explanation(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "ingest-token").write_text("from-state\n")
    given = tmp_path / "given"
    given.write_text("from-env-file\n")
    dirs = [str(state)]
    assert client.find_token("explicit", env={}, state_dirs=dirs).token == "explicit"
    env = {"VIGIL_INGEST_TOKEN": "from-env", "VIGIL_INGEST_TOKEN_FILE": str(given)}
    assert client.find_token(env=env, state_dirs=dirs).token == "from-env"
    env.pop("VIGIL_INGEST_TOKEN")
    assert client.find_token(env=env, state_dirs=dirs).token == "from-env-file"
    found = client.find_token(env={}, state_dirs=dirs)
    assert found.token == "from-state" and found.path == str(state / "ingest-token")
    assert client.find_token(env={"VIGIL_STATE_DIR": str(state)}).token == "from-state"
    missing = client.find_token(env={}, state_dirs=[str(tmp_path / "nowhere")])
    assert missing.token is None
    text = missing.explain()
    assert "$VIGIL_INGEST_TOKEN (not set)" in text
    assert "$VIGIL_INGEST_TOKEN_FILE (not set)" in text
    assert f"{tmp_path / 'nowhere' / 'ingest-token'}: No such file or directory" in text


# --- a real agent ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_dir() -> Iterator[Path]:
    """A state directory other users can enter (pytest's tmp is 0700): only the token
    file's own mode keeps them out."""
    d = Path(tempfile.mkdtemp(prefix="vigil-auth-", dir="/tmp"))
    d.chmod(0o755)
    state = d / "state"
    ReferenceStore(state).save(
        "ranker",
        "v1",
        ReferenceSample(np.random.default_rng(0).normal(size=(500, 2)), FEATURES),
        "test",
    )
    for p in [state, *state.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def agent(shared_dir: Path) -> Iterator[AgentProcess]:
    with AgentProcess([*QUICK, "--state-dir", str(shared_dir / "state")]) as a:
        yield a


def _request(url: str, headers: dict[str, str], data: bytes | None = None) -> int:
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_token_is_generated_0600_on_first_start(agent: AgentProcess) -> None:
    path = agent.token_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.stat().st_uid == 0
    assert "API token generated" in agent.logs() and str(path) in agent.logs()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root")
def test_row1_another_local_user_cannot_post_samples_to_a_loopback_agent(
    agent: AgentProcess, shared_dir: Path
) -> None:
    """As `nobody`, with the client library's own token lookup: no token readable, 401."""
    script = f"""
import json, sys, urllib.error, urllib.request
from agent.drift.client import find_token
found = find_token(state_dirs=[{str(shared_dir / "state")!r}])
headers = {{"Content-Type": "application/json"}}
if found.token:
    headers["Authorization"] = "Bearer " + found.token
body = json.dumps({{"version": "v1", "rows": [{{"age": 9.0, "income": 9.0}}] * 5000}}).encode()
req = urllib.request.Request({agent.url + "/v1/drift/ranker/samples"!r}, data=body,
                             headers=headers, method="POST")
try:
    status = urllib.request.urlopen(req, timeout=10).status
except urllib.error.HTTPError as e:
    status = e.code
print(json.dumps({{"status": status, "lookup": found.explain()}}))
"""
    r = subprocess.run(
        ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
         sys.executable, "-c", script],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == 401
    assert "ingest-token: Permission denied" in out["lookup"]
    # Nothing reached the window.
    _, text = agent.get("/metrics")
    assert 'vigil_drift_samples_total{model="ranker",version="v1"} 0.0' in text


@pytest.mark.parametrize(
    "path",
    ["/v1/profiles", "/v1/profiles/{pid}?format=speedscope", "/v1/profiles/{pid}", "/v1/drift",
     "/v1/drift/ranker/check"],
)  # fmt: skip
def test_row5_reads_that_reveal_code_or_data_need_the_token(agent: AgentProcess, path: str) -> None:
    url = agent.url + path.format(pid=os.getpid())
    assert _request(url, {}) == 401
    assert _request(url, {"Authorization": "Bearer wrong"}) == 401
    assert _request(url, agent.auth()) in (200, 404)  # 404: pid not watched, or no window


def test_open_routes_stay_open_and_unknown_paths_are_404(agent: AgentProcess) -> None:
    for path in ("/", "/metrics", "/healthz", "/readyz"):
        assert agent.get(path)[0] == 200, path
    assert agent.get("/nope")[0] == 404


def test_refusals_are_counted_by_route_pattern_not_by_path(agent: AgentProcess) -> None:
    for model in ("a", "b", "c"):
        _request(f"{agent.url}/v1/drift/{model}/samples", {}, data=b"{}")
    _, text = agent.get("/metrics")
    refused = [
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "vigil_http_requests_refused_total"
        and s.labels == {"route": "/v1/drift/{model}/samples", "reason": "unauthorized"}
    ]
    assert refused and refused[0] >= 3
    assert 'model="a"' not in text


def test_cli_finds_the_token_and_says_where_it_looked(agent: AgentProcess, tmp_path: Path) -> None:
    state = str(agent.token_path().parent)
    check = ["drift", "check", "--model", "ranker", "--agent", agent.url]
    r = run_vigil([*check, "--state-dir", state])
    assert r.returncode in (0, 3), r.stderr  # decided or not: it was let in
    r = run_vigil(
        ["drift", "check", "--model", "ranker", "--agent", agent.url, "--state-dir", str(tmp_path)]
    )
    assert r.returncode == 1 and "401" in r.stderr, r.stderr
    assert f"{tmp_path / 'ingest-token'}: No such file or directory" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_vigil(
        ["drift", "check", "--model", "ranker", "--agent", agent.url],
        env={"VIGIL_INGEST_TOKEN": agent.token()},
    )
    assert r.returncode in (0, 3), r.stderr


def test_client_library_finds_the_token_in_the_state_dir(agent: AgentProcess) -> None:
    env_before = os.environ.get("VIGIL_STATE_DIR")
    os.environ["VIGIL_STATE_DIR"] = str(agent.token_path().parent)
    try:
        c = client.DriftClient(agent.url, "ranker", "v1", batch_size=10, flush_interval=0.1)
    finally:
        if env_before is None:
            os.environ.pop("VIGIL_STATE_DIR")
        else:
            os.environ["VIGIL_STATE_DIR"] = env_before
    for _ in range(20):
        c.record({"age": 1.0, "income": 2.0})
    c.close()
    assert c.stats()["sent"] == 20, (c.stats(), c.last_error)


def test_restart_keeps_the_token(shared_dir: Path, agent: AgentProcess) -> None:
    before = agent.token()
    with AgentProcess([*QUICK, "--state-dir", str(shared_dir / "state")]) as again:
        assert again.token() == before
        assert "API token generated" not in again.logs()


def test_unwritable_state_dir_refuses_the_apis_and_says_why(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with AgentProcess([*QUICK, "--state-dir", str(blocker / "state")]) as a:
        status, body = a.get("/v1/drift")
        assert status == 503 and "ingest-token" in body
        assert a.get("/metrics")[0] == 200
        assert "cannot create the API token" in a.logs()


# --- row 16: the scheme's case, the same at both servers ----------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_row16_scheme_case_is_accepted_at_both_servers(
    agent: AgentProcess, tmp_path: Path, scheme: str
) -> None:
    assert _request(agent.url + "/v1/drift", {"Authorization": f"{scheme} {agent.token()}"}) == 200
    root = release_dir(tmp_path / "models" / "demo", ["v1", "v2"])
    with ControllerProcess(["--release-dir", str(root)], tmp_path / "state") as c:
        status, _ = http_get(
            c.url + "/v1/rollbacks", headers={"Authorization": f"{scheme} {TOKEN}"}
        )
        assert status == 200
        status, _ = http_get(c.url + "/v1/rollbacks", headers={"Authorization": f"Basic {TOKEN}"})
        assert status == 401
        assert (
            c.metric(
                "vigil_http_requests_refused_total", route="/v1/rollbacks", reason="unauthorized"
            )
            == 1
        )


def _paths(state: Path, token_file: str = "") -> Paths:
    flags = {"state-dir": str(state), "ingest-token-file": token_file}
    return resolve(SPECS, flag_values=flags).paths


def test_doctor_says_where_the_token_is_or_why_there_is_none(tmp_path: Path) -> None:
    from agent.collectors.drift.doctor import ingest_check

    fresh = ingest_check(_paths(tmp_path / "state"))
    assert fresh.ok and "generated at" in fresh.detail
    auth.ensure_token(tmp_path / "state" / "ingest-token")
    made = ingest_check(_paths(tmp_path / "state"))
    assert made.ok and f"bearer token from {tmp_path / 'state' / 'ingest-token'}" in made.detail
    missing = ingest_check(_paths(tmp_path, str(tmp_path / "nope")))
    assert not missing.ok and "does not exist" in missing.detail
    blocker = tmp_path / "file"
    blocker.write_text("")
    stuck = ingest_check(_paths(blocker / "state"))
    assert not stuck.ok and "is not writable" in stuck.detail and "--ingest-token-file" in stuck.fix


def test_header_bytes_that_are_not_utf8_are_refused_not_crashed(agent: AgentProcess) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", int(agent.url.rsplit(":", 1)[1])), 10) as s:
        s.sendall(b"GET /v1/drift HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 401")
    assert auth.bearer_problem("Bearer \udcff", "s3cret") is not None


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real tmpfs, filled up (root only: mounting is what makes the disk really full)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.fail(f"this test mounts a tmpfs and needs root: {res.stderr.strip()}")
    try:
        with open(mount / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_leaves_no_half_token_and_the_next_start_makes_one(full_disk: Path) -> None:
    path = full_disk / auth.INGEST_TOKEN_NAME
    with pytest.raises(OSError):
        auth.ensure_token(path)
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]  # no token, no temp
    with AgentProcess([*QUICK, "--state-dir", str(full_disk)]) as a:
        status, body = a.get("/v1/drift")
        assert status == 503 and str(path) in body
    (full_disk / "filler").unlink()
    with AgentProcess([*QUICK, "--state-dir", str(full_disk)]) as a:
        assert a.get("/v1/drift", auth=True)[0] == 200


def test_client_rereads_a_rotated_token_file_and_says_where_it_looked(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    token.chmod(0o600)
    with AgentProcess(
        [*QUICK, "--state-dir", str(tmp_path), "--ingest-token-file", str(token)]
    ) as a:
        c = client.DriftClient(
            a.url, "nosuch", "v1", token_file=str(token), batch_size=1, flush_interval=0.05
        )
        new = tmp_path / "token.new"
        new.write_text("second\n")
        new.chmod(0o600)
        new.replace(token)
        c.record({"x": 1.0})  # refused with 401: the client still had "first"
        deadline = time.monotonic() + 10
        while "401" not in c.last_error and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"token from {token} (token_file)" in c.last_error
        c.record({"x": 1.0})  # read again: now the agent answers 404 (no such model)
        c.close()
        assert "401" not in c.last_error and "404" in c.last_error, c.last_error
    lost = client.DriftClient("http://127.0.0.1:9", "m", "v", token_file=str(tmp_path / "no"))
    lost.close()
    assert lost.auth.token is None and "no (token_file): No such file" in lost.auth.explain()
