"""--web.config.file: TLS and basic auth in the exporter-toolkit format, on both servers.

The parser is tested exhaustively; the servers with a real TLS client (the ssl module),
certificates made by the `openssl` command line and real bcrypt hashes.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml
from agentproc import AgentProcess, free_port, run_vigil
from rbproc import TOKEN, ControllerProcess, release_dir

from agent.config import ConfigError
from agent.webconfig import TlsConfig, WebConfig, load_web_config, parse_web_config

BASE = Path("/etc/vigil")
HASH = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()


# --- the parser -----------------------------------------------------------------------------


def parse(doc: Any) -> WebConfig:
    return parse_web_config(doc, BASE, "web.config.file w.yml")


def test_empty_file_means_plain_http_without_auth() -> None:
    assert parse(None) == WebConfig()
    assert parse({}) == WebConfig()
    assert parse({"tls_server_config": {}}) == WebConfig()


def test_full_file_with_relative_paths_resolved_to_its_directory() -> None:
    cfg = parse(
        {
            "tls_server_config": {
                "cert_file": "s.crt",
                "key_file": "/abs/s.key",
                "client_ca_file": "ca.crt",
                "min_version": "TLS13",
            },
            "basic_auth_users": {"prometheus": HASH},
        }
    )
    assert cfg.tls == TlsConfig(
        BASE / "s.crt",
        Path("/abs/s.key"),
        BASE / "ca.crt",
        "RequireAndVerifyClientCert",  # exporter-toolkit's default when a client CA is set
        "TLS13",
        None,
    )
    assert cfg.users == {"prometheus": HASH}


TLS = {"cert_file": "s.crt", "key_file": "s.key"}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "expected a mapping at the top level"),
        ({"tls_config": {}}, "unknown key 'tls_config'"),
        ({"http_server_config": {"http2": True}}, "http_server_config is not supported"),
        ({"tls_server_config": "yes"}, "tls_server_config: expected a mapping"),
        ({"tls_server_config": {"key_file": "k"}}, "tls_server_config.cert_file: missing"),
        ({"tls_server_config": {"cert_file": "c"}}, "tls_server_config.key_file: missing"),
        ({"tls_server_config": {**TLS, "cert_fil": "x"}}, "unknown key 'cert_fil'"),
        ({"tls_server_config": {**TLS, "cipher_suites": []}}, "cipher_suites: not supported"),
        ({"tls_server_config": {**TLS, "cert_file": 3}}, "cert_file: expected a non-empty"),
        ({"tls_server_config": {**TLS, "cert_file": ""}}, "cert_file: expected a non-empty"),
        (
            {"tls_server_config": {**TLS, "client_auth_type": "RequireAnyClientCert"}},
            "client_auth_type: RequireAnyClientCert is not supported",
        ),
        (
            {"tls_server_config": {**TLS, "client_auth_type": "RequestClientCert"}},
            "client_auth_type: RequestClientCert is not supported",
        ),
        (
            {"tls_server_config": {**TLS, "client_auth_type": "Always"}},
            "client_auth_type: 'Always' is not one of",
        ),
        (
            {"tls_server_config": {**TLS, "client_auth_type": "RequireAndVerifyClientCert"}},
            "client_ca_file: needed to verify client certificates",
        ),
        (
            {
                "tls_server_config": {
                    **TLS,
                    "client_ca_file": "ca",
                    "client_auth_type": "NoClientCert",
                }
            },
            "client_ca_file is set but client_auth_type is NoClientCert",
        ),
        ({"tls_server_config": {**TLS, "min_version": "TLS14"}}, "min_version: 'TLS14' is not"),
        ({"tls_server_config": {**TLS, "min_version": 1.2}}, "min_version: expected a non-empty"),
        (
            {"tls_server_config": {**TLS, "min_version": "TLS13", "max_version": "TLS12"}},
            "max_version: TLS12 is below min_version TLS13",
        ),
        ({"basic_auth_users": ["a"]}, "basic_auth_users: expected a mapping"),
        ({"basic_auth_users": {"a": "plain"}}, "basic_auth_users.a: not a bcrypt hash"),
        ({"basic_auth_users": {"a": 12}}, "basic_auth_users.a: expected a non-empty string"),
        ({"basic_auth_users": {"a:b": HASH}}, "a user name cannot contain ':'"),
        ({"basic_auth_users": {"": HASH}}, "user name: expected a non-empty string"),
    ],
)
def test_bad_files_name_the_key(doc: Any, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(doc)
    assert message in str(err.value) and "w.yml" in str(err.value)


# --- certificates and files -------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command line is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=vigil test CA", cwd=d)  # fmt: skip
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN=vigil test {name}", cwd=d)  # fmt: skip
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
                "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    # A second, unrelated CA: its client certificate must not get in.
    openssl("req", "-x509", *ec, "-keyout", "other.key", "-out", "other.crt", "-days", "2",
            "-subj", "/CN=someone else", cwd=d)  # fmt: skip
    return d


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def test_load_names_missing_and_mismatched_files(pki: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read .*nope\.yml"):
        load_web_config(str(tmp_path / "nope.yml"))
    (tmp_path / "bad.yml").write_text("tls_server_config: [\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_web_config(str(tmp_path / "bad.yml"))
    missing = write(
        tmp_path / "m.yml", {"tls_server_config": {"cert_file": "x.crt", "key_file": "x.key"}}
    )
    with pytest.raises(ConfigError, match=r"tls_server_config.cert_file: .*x\.crt does not exist"):
        load_web_config(str(missing))
    swapped = write(
        tmp_path / "s.yml",
        {
            "tls_server_config": {
                "cert_file": str(pki / "server.crt"),
                "key_file": str(pki / "client.key"),
            }
        },
    )
    with pytest.raises(ConfigError, match="cert_file/key_file: cannot load"):
        load_web_config(str(swapped))
    no_ca = write(
        tmp_path / "ca.yml",
        {
            "tls_server_config": {
                "cert_file": str(pki / "server.crt"),
                "key_file": str(pki / "server.key"),
                "client_ca_file": "missing-ca.crt",
            }
        },
    )
    with pytest.raises(ConfigError, match="client_ca_file: cannot load"):
        load_web_config(str(no_ca))


@pytest.mark.parametrize("server", ["agent", "controller"])
def test_bad_file_is_a_usage_error_without_traceback(tmp_path: Path, server: str) -> None:
    bad = write(tmp_path / "web.yml", {"basic_auth_users": {"prometheus": "not-a-hash"}})
    if server == "agent":
        args = ["run", "--listen", f"127.0.0.1:{free_port()}", "--state-dir", str(tmp_path),
                "--web.config.file", str(bad)]  # fmt: skip
    else:
        root = release_dir(tmp_path / "models" / "demo", ["v1", "v2"])
        args = ["rollback-controller", "--listen", f"127.0.0.1:{free_port()}",
                "--state-dir", str(tmp_path / "c"), "--release-dir", str(root),
                "--web.config.file", str(bad)]  # fmt: skip
    r = run_vigil(args, env={"VIGIL_ROLLBACK_TOKEN": TOKEN}, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "basic_auth_users.prometheus: not a bcrypt hash" in r.stderr
    assert "Traceback" not in r.stderr


# --- real servers, real TLS clients -------------------------------------------------------------


def client_ctx(pki: Path, cert: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if cert == "client":
        ctx.load_cert_chain(pki / "client.crt", pki / "client.key")
    elif cert == "other":
        ctx.load_cert_chain(pki / "other.crt", pki / "other.key")
    return ctx


def get(url: str, ctx: ssl.SSLContext | None, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def wait_tls(url: str, ctx: ssl.SSLContext, proc: Any, logs: Any) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(logs())
        try:
            get(url, ctx)
            return
        except (OSError, ssl.SSLError):
            time.sleep(0.1)
    raise TimeoutError(logs())


@pytest.fixture(scope="module")
def web_file(pki: Path) -> Path:
    password_hash = bcrypt.hashpw(b"scrape-pw", bcrypt.gensalt(rounds=10)).decode()
    return write(
        pki / "web.yml",
        {
            "tls_server_config": {
                "cert_file": "server.crt",  # relative: to web.yml's directory
                "key_file": "server.key",
                "client_ca_file": "ca.crt",
                "client_auth_type": "VerifyClientCertIfGiven",
                "min_version": "TLS12",
            },
            "basic_auth_users": {"prometheus": password_hash},
        },
    )


@pytest.fixture(scope="module")
def tls_agent(
    web_file: Path, pki: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    state = tmp_path_factory.mktemp("state")
    a = AgentProcess(
        ["--no-collector.sched", "--no-collector.gpu", "--state-dir", str(state),
         "--web.config.file", str(web_file)],
        wait_ready=False,
    )  # fmt: skip
    with a:
        a.url = a.url.replace("http://", "https://")
        assert a.proc is not None
        wait_tls(a.url + "/healthz", client_ctx(pki), a.proc, a.logs)
        yield a


def test_agent_serves_tls_and_basic_auth_on_every_open_route(
    tls_agent: AgentProcess, pki: Path
) -> None:
    ctx = client_ctx(pki)
    for path in ("/metrics", "/healthz", "/readyz", "/"):
        assert get(tls_agent.url + path, ctx) == 401, path
        assert get(tls_agent.url + path, ctx, basic("prometheus", "wrong")) == 401, path
        assert get(tls_agent.url + path, ctx, basic("nobody", "scrape-pw")) == 401, path
    assert get(tls_agent.url + "/metrics", ctx, basic("prometheus", "scrape-pw")) == 200
    # Cached after the first success: many scrapes, one bcrypt; still right every time.
    for _ in range(5):
        assert get(tls_agent.url + "/metrics", ctx, basic("prometheus", "scrape-pw")) == 200


def test_agent_apis_take_the_bearer_token_over_tls(tls_agent: AgentProcess, pki: Path) -> None:
    ctx = client_ctx(pki)
    assert get(tls_agent.url + "/v1/drift", ctx, basic("prometheus", "scrape-pw")) == 401
    assert get(tls_agent.url + "/v1/drift", ctx, tls_agent.auth()) == 200


def test_agent_refuses_plain_http_and_untrusted_client_certificates(
    tls_agent: AgentProcess, pki: Path
) -> None:
    plain = tls_agent.url.replace("https://", "http://")
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        get(plain + "/metrics", None, basic("prometheus", "scrape-pw"))
    # VerifyClientCertIfGiven: a certificate from our CA is fine, another CA's is refused.
    ok = get(
        tls_agent.url + "/metrics", client_ctx(pki, "client"), basic("prometheus", "scrape-pw")
    )
    assert ok == 200
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        get(tls_agent.url + "/metrics", client_ctx(pki, "other"), basic("prometheus", "scrape-pw"))


def test_controller_requires_client_certificate_and_basic_auth(pki: Path, tmp_path: Path) -> None:
    web = write(
        tmp_path / "web.yml",
        {
            "tls_server_config": {
                "cert_file": str(pki / "server.crt"),
                "key_file": str(pki / "server.key"),
                "client_ca_file": str(pki / "ca.crt"),  # RequireAndVerifyClientCert by default
                "min_version": "TLS13",
            },
            "basic_auth_users": {"prometheus": HASH},
        },
    )
    root = release_dir(tmp_path / "models" / "demo", ["v1", "v2"])
    c = ControllerProcess(
        ["--release-dir", str(root), "--web.config.file", str(web)], tmp_path / "state"
    )
    c.url = c.url.replace("http://", "https://")
    c.start(wait=False)
    try:
        with_cert = client_ctx(pki, "client")
        assert c.proc is not None
        wait_tls(c.url + "/healthz", with_cert, c.proc, c.logs)
        assert get(c.url + "/metrics", with_cert) == 401
        assert get(c.url + "/metrics", with_cert, basic("prometheus", "pw")) == 200
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert get(c.url + "/v1/rollbacks", with_cert, headers) == 200
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            get(c.url + "/metrics", client_ctx(pki), basic("prometheus", "pw"))
        tls12 = client_ctx(pki, "client")
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2  # below min_version TLS13
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            get(c.url + "/metrics", tls12, basic("prometheus", "pw"))
        body = json.dumps({}).encode()
        req = urllib.request.Request(c.url + "/v1/alerts", data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10, context=with_cert)
        assert err.value.code == 401
    finally:
        c.stop()


@pytest.mark.parametrize(
    "header",
    [None, "Bearer x", "Basic", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(),
     "Basic " + base64.b64encode(b"\xff:\xfe").decode(), "Basic \u00e9t\u00e9"],
)  # fmt: skip
def test_basic_auth_refuses_malformed_headers(header: str | None) -> None:
    import asyncio

    from agent.webconfig import BasicAuth

    checker = BasicAuth({"prometheus": HASH})
    try:
        refusal = asyncio.run(checker.problem(header))
    finally:
        checker.close()
    assert refusal is not None and refusal.status == 401


def test_basic_auth_accepts_the_right_password_and_only_it() -> None:
    import asyncio

    from agent.webconfig import BasicAuth

    checker = BasicAuth({"prometheus": HASH})

    async def check(user: str, pw: str) -> Any:
        return await checker.problem(basic(user, pw)["Authorization"])

    try:
        assert asyncio.run(check("prometheus", "pw")) is None
        assert asyncio.run(check("prometheus", "pw")) is None  # from the cache
        assert asyncio.run(check("prometheus", "pw2")) is not None
        assert asyncio.run(check("other", "pw")) is not None
    finally:
        checker.close()


# --- wrong passwords cannot lock the scraper out --------------------------------------------


def test_failed_attempts_are_throttled_per_user_and_address() -> None:
    import asyncio

    from agent.webconfig import CHECK_BURST, CHECK_RATE_PER_S, BasicAuth

    now = [100.0]
    checker = BasicAuth({"prometheus": HASH}, clock=lambda: now[0])

    async def check(user: str, pw: str, peer: str) -> int | None:
        refusal = await checker.problem(basic(user, pw)["Authorization"], peer)
        return None if refusal is None else refusal.status

    async def scenario() -> None:
        for i in range(CHECK_BURST):
            assert await check("prometheus", f"guess-{i}", "10.0.0.9") == 401
        # Another guess from there, too soon: refused without a bcrypt check.
        assert await check("prometheus", "guess-x", "10.0.0.9") == 429
        # The same wrong password again is known to be wrong: 401 at once, never a wait.
        assert await check("prometheus", "guess-0", "10.0.0.9") == 401
        # Invented names share one budget per address.
        for i in range(CHECK_BURST):
            assert await check(f"nobody-{i}", "x", "10.0.0.9") == 401
        assert await check("nobody-x", "x", "10.0.0.9") == 429
        # Another address is not held back by this one's failures.
        assert await check("prometheus", "pw", "10.0.0.2") is None
        now[0] += 1 / CHECK_RATE_PER_S
        assert await check("prometheus", "guess-y", "10.0.0.9") == 401
        assert await check("prometheus", "guess-z", "10.0.0.9") == 429
        now[0] += 1 / CHECK_RATE_PER_S
        assert await check("prometheus", "pw", "10.0.0.9") is None
        # Once verified, the right password never waits, even right after failures.
        for i in range(CHECK_BURST + 2):
            assert await check("prometheus", f"again-{i}", "10.0.0.9") in (401, 429)
        assert await check("prometheus", "pw", "10.0.0.9") is None

    try:
        asyncio.run(scenario())
    finally:
        checker.close()


def test_a_flood_of_wrong_passwords_leaves_the_scraper_its_200(tmp_path: Path) -> None:
    import http.client
    import secrets
    import threading

    slow_hash = bcrypt.hashpw(b"scrape-pw", bcrypt.gensalt(rounds=12)).decode()
    web = write(tmp_path / "web.yml", {"basic_auth_users": {"prometheus": slow_hash}})
    quick = ["--no-collector.sched", "--no-collector.gpu", "--no-collector.profile"]
    args = [*quick, "--state-dir", str(tmp_path / "s"), "--web.config.file", str(web)]
    with AgentProcess(args, wait_ready=False) as a:
        port = a.port

        def get_metrics(user: str, pw: str, source: str) -> int:
            conn = http.client.HTTPConnection(
                "127.0.0.1", port, timeout=30, source_address=(source, 0)
            )
            try:
                conn.request("GET", "/metrics", headers=basic(user, pw))
                r = conn.getresponse()
                body = r.read()
                if source == "127.0.0.2" and r.status != 200:
                    answers.append(body.decode(errors="replace"))
                return r.status
            finally:
                conn.close()

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and a.proc is not None and a.proc.poll() is None:
            try:
                # Up, and the right password not checked (so not cached) yet.
                if get_metrics("someone", "else", "127.0.0.3") == 401:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"agent not up:\n{a.logs()}")
        # The attacker: 16 clients guessing passwords and names as fast as answers come.
        stop = threading.Event()
        answers: list[str] = []
        flood: list[int] = []
        errors: list[BaseException] = []

        def guess() -> None:
            try:
                while not stop.is_set():
                    user = secrets.choice(["prometheus", secrets.token_hex(4)])
                    flood.append(get_metrics(user, secrets.token_hex(8), "127.0.0.1"))
            except BaseException as exc:
                errors.append(exc)

        guessers = [threading.Thread(target=guess) for _ in range(16)]
        for t in guessers:
            t.start()
        try:
            time.sleep(1.5)
            # A scraper whose password is not cached (a restarted Prometheus, a new
            # replica at another address): checked, not refused.
            got = [get_metrics("prometheus", "scrape-pw", "127.0.0.2") for _ in range(3)]
        finally:
            stop.set()
            for t in guessers:
                t.join(timeout=30)
        assert errors == []
        assert got == [200, 200, 200], (got, answers, sorted(set(flood)))
        assert flood and set(flood) <= {401, 429}
        assert flood.count(401) < len(flood) / 2, "most guesses never reached bcrypt"
