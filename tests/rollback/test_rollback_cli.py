"""`vigil rollback-controller` usage errors: exit 2, one line naming the problem, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from rbproc import run_controller

from agent.cli import main


def vigil(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """In-process: these fail before anything starts, so no child process is needed."""
    code = main(["rollback-controller", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("targets: {a: {action: teleport}}", "targets.a.action: 'teleport' is not one of"),
        ("targets: {a: {action: command, argv: echo hi}}", "argv: expected a non-empty list"),
        ("targets: {a: {action: command, argv: [x, '{model}']}}", "as environment, not as {label}"),
        (
            "targets: {a: {action: kubernetes, namespace: n}}",
            "needs allowed_namespaces, deployment",
        ),
        ("targets: {a: {action: release_dir, path: /x, colour: red}}", "unknown key(s) colour"),
        ("policy: [{target: nowhere}]", "'nowhere' is not a configured target"),
        (
            "targets: {a: {action: release_dir, path: /x}}\n"
            "policy: [{target: a, match_re: {m: '('}}]",
            "bad regular expression",
        ),
        ("cooldown: soon\ntargets: {}", "cooldown"),
        ("max_per_hour: 0", "max_per_hour must be at least 1"),
        ("lisen: ':1'", "unknown key(s) lisen"),
        ("targets: {}", "nothing to roll back"),
        ("[1, 2]", "expected a mapping"),
        ("a: [", "not valid YAML"),
        (
            "token_file: /nonexistent/token\nrelease_dir: /tmp",
            "token file /nonexistent/token cannot be read",
        ),
    ],
)
def test_config_errors(
    tmp_path: Path, config: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config)
    code, err = vigil(["--config", str(cfg), "--state-dir", str(tmp_path / "s")], capsys)
    assert code == 2, err
    assert message in err and err.startswith("vigil: error: ")


def test_flag_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = vigil(["--release-dir", str(tmp_path), "--listen", "nowhere"], capsys)
    assert code == 2 and "is not HOST:PORT" in err
    code, err = vigil(
        [
            "--release-dir",
            str(tmp_path),
            "--otlp-endpoint",
            "collector:4318",
            "--state-dir",
            str(tmp_path / "s"),
        ],
        capsys,
    )
    assert code == 2 and "not an http(s) URL" in err
    code, err = vigil(["--state-dir", str(tmp_path / "s")], capsys)
    assert code == 2 and "give --release-dir DIR" in err


def test_an_unusable_journal_is_one_line(tmp_path: Path) -> None:
    # A state dir that is a file: the journal cannot be created at all.
    (tmp_path / "s").write_text("not a directory")
    res = run_controller(
        ["--release-dir", str(tmp_path), "--state-dir", str(tmp_path / "s"), "--insecure-no-auth"]
    )
    assert res.returncode == 1 and "cannot open the journal" in res.stderr
    assert str(tmp_path / "s") in res.stderr and "Traceback" not in res.stderr


def test_a_busy_port_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = run_controller(
            [
                "--release-dir",
                str(tmp_path),
                "--state-dir",
                str(tmp_path / "s"),
                "--listen",
                f"127.0.0.1:{port}",
                "--insecure-no-auth",
            ]
        )
    assert res.returncode == 1 and "cannot listen" in res.stderr and "Traceback" not in res.stderr


def test_generated_token_is_complete_0600_and_reused(tmp_path: Path) -> None:
    from agent.rollback.config import TOKEN_NAME, ControllerConfig, ensure_token

    first = ControllerConfig(state_dir=tmp_path / "state")
    path = ensure_token(first)
    assert path == tmp_path / "state" / TOKEN_NAME
    assert first.token and path.read_text() == first.token + "\n"
    assert path.stat().st_mode & 0o777 == 0o600
    again = ControllerConfig(state_dir=tmp_path / "state")
    ensure_token(again)
    assert again.token == first.token
    # No temp file is left beside it.
    assert sorted(p.name for p in path.parent.iterdir()) == [TOKEN_NAME]


def test_token_write_failure_leaves_no_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from agent.config import ConfigError
    from agent.rollback.config import ControllerConfig, ensure_token

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(ConfigError, match="No space left on device"):
        ensure_token(ControllerConfig(state_dir=tmp_path))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert ensure_token(ControllerConfig(state_dir=tmp_path)) is not None


def test_empty_generated_token_names_the_file_and_the_fix(tmp_path: Path) -> None:
    from agent.config import ConfigError
    from agent.rollback.config import TOKEN_NAME, ControllerConfig, ensure_token

    (tmp_path / TOKEN_NAME).write_text("")
    with pytest.raises(ConfigError) as err:
        ensure_token(ControllerConfig(state_dir=tmp_path))
    assert str(tmp_path / TOKEN_NAME) in str(err.value)
    assert "delete it" in str(err.value)


def test_docs_usage_lists_every_flag_of_the_real_help() -> None:
    import argparse
    import re

    from agent.rollback.cli import register

    parser = argparse.ArgumentParser(prog="vigil")
    register(parser.add_subparsers())
    sub = parser._subparsers._group_actions[0].choices["rollback-controller"]  # type: ignore[union-attr]
    flags = [
        s for a in sub._actions for s in a.option_strings if s.startswith("--") and s != "--help"
    ]
    doc = (Path(__file__).parents[2] / "docs" / "rollback.md").read_text()
    usage = re.search(r"```\n(vigil rollback-controller .*?)```", doc, re.S)
    assert usage, "docs/rollback.md has no usage block"
    documented = re.findall(r"\[(--[a-z.-]+)", usage.group(1))
    assert documented == flags
