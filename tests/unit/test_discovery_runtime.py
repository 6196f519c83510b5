"""Discovery finds Python processes by the ML runtime they have mapped, says why it watches
each process, and logs each one it adds or drops (fixture proc trees, injected procfs)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from test_discovery import make_proc

from agent import discovery
from agent import log as agent_log
from agent.discovery import (
    MAPS_READS,
    RUNTIMES,
    Discovery,
    is_python,
    runtimes_in_maps,
    suggest_watch,
)

SITE = "/srv/venv/lib/python3.11/site-packages"
LINE = "7f3c2a000000-7f3c2a100000 r-xp 00000000 fd:01 1234    {}\n"
# One real-looking mapped file per runtime, as `import <runtime>` maps it.
MAPPED = {
    "torch": f"{SITE}/torch/lib/libtorch_cpu.so",
    "onnxruntime": f"{SITE}/onnxruntime/capi/onnxruntime_pybind11_state.so",
    "tensorflow": f"{SITE}/tensorflow/libtensorflow_framework.so.2",
    "jax": f"{SITE}/jaxlib/xla_extension.so",
    "scikit-learn": f"{SITE}/sklearn/utils/_openmp_helpers.cpython-311-x86_64-linux-gnu.so",
    "xgboost": f"{SITE}/xgboost/lib/libxgboost.so",
    "lightgbm": f"{SITE}/lightgbm/lib/lib_lightgbm.so",
}
NUMPY_ONLY = (
    LINE.format("/usr/bin/python3.11")
    + LINE.format(f"{SITE}/numpy/core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so")
    + LINE.format("/usr/lib/x86_64-linux-gnu/libc.so.6")
    + "7ffd1c5e0000-7ffd1c601000 rw-p 00000000 00:00 0                          [stack]\n"
)


@pytest.fixture(autouse=True)
def _fresh_log_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_log, "_limiter", agent_log._Limiter())


def maps_with(*files: str) -> str:
    return NUMPY_ONLY + "".join(LINE.format(f) for f in files)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_each_runtime_is_recognised_by_its_mapped_files(runtime: str) -> None:
    assert runtimes_in_maps(maps_with(MAPPED[runtime]).encode()) == (runtime,)


def test_numpy_alone_is_not_an_ml_runtime() -> None:
    assert runtimes_in_maps(NUMPY_ONLY.encode()) == ()
    assert runtimes_in_maps(b"") == ()


def test_several_runtimes_are_all_named() -> None:
    text = maps_with(MAPPED["xgboost"], MAPPED["scikit-learn"]).encode()
    assert runtimes_in_maps(text) == ("scikit-learn", "xgboost")


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        ("python3 serve.py", True),
        ("/usr/bin/python3.11 -m uvicorn app:app", True),
        ("/srv/venv/bin/python serve.py", True),
        ("bash -c python3", False),
        ("/usr/bin/pythonista", False),
        ("node server.js", False),
        ("", False),
    ],
)
def test_is_python(cmdline: str, expected: bool) -> None:
    assert is_python(cmdline) is expected


@pytest.mark.parametrize(
    ("cmdline", "regex"),
    [
        ("python3 serve.py --port 8080", r"python.*serve\.py"),
        ("/srv/venv/bin/python /srv/app/serve.py", r"python.*serve\.py"),
        ("python3 -u -W ignore worker.py", r"python.*worker\.py"),
        ("python3 -m uvicorn app:app", r"python.*-m uvicorn"),
        ("python3 -mhttp.server", r"python.*-mhttp\.server"),
        ("python3", r"^python3$"),
    ],
)
def test_the_suggested_watch_matches_the_process(cmdline: str, regex: str) -> None:
    assert suggest_watch(cmdline) == regex
    assert re.search(regex, cmdline)


def test_a_python_server_with_sklearn_mapped_is_watched_without_any_pattern(
    tmp_path: Path,
) -> None:
    make_proc(tmp_path, 100, ["python3", "serve.py"], "python3", 5)
    (tmp_path / "100" / "maps").write_text(maps_with(MAPPED["scikit-learn"]))
    make_proc(tmp_path, 200, ["python3", "idle.py"], "python3", 6)
    (tmp_path / "200" / "maps").write_text(NUMPY_ONLY)
    # Not Python: a runtime library mapped into it does not make it a model server.
    make_proc(tmp_path, 300, ["/usr/bin/java", "-jar", "x.jar"], "java", 7)
    (tmp_path / "300" / "maps").write_text(maps_with(MAPPED["onnxruntime"]))
    d = Discovery(procfs=str(tmp_path), patterns=[], runtimes=True, self_pid=1)
    d.refresh()
    assert set(d.snapshot()) == {100}
    assert d.snapshot()[100].sources == {"runtime"}
    seen = {s.pid: s for s in d.python_seen}
    assert set(seen) == {100, 200}
    assert seen[100].runtimes == ("scikit-learn",) and not seen[200].sources


def test_watched_processes_are_counted_by_reason(tmp_path: Path) -> None:
    make_proc(tmp_path, 100, ["python3", "serve.py"], "python3", 5)
    (tmp_path / "100" / "maps").write_text(maps_with(MAPPED["torch"]))
    make_proc(tmp_path, 200, ["python3", "-m", "vllm.entrypoints"], "python3", 6)
    (tmp_path / "200" / "maps").write_text(maps_with(MAPPED["torch"]))
    make_proc(tmp_path, 300, ["/opt/tritonserver"], "tritonserver", 7)
    d = Discovery(procfs=str(tmp_path), patterns=[r"vllm"], runtimes=True, self_pid=1)
    d.set_extra("gpu", {300, 200})
    d.refresh()
    reg = CollectorRegistry()
    reg.register(d)
    got = {
        r: reg.get_sample_value("vigil_discovery_watched_processes", {"reason": r})
        for r in ("watch", "runtime", "gpu")
    }
    assert got == {"watch": 1.0, "runtime": 2.0, "gpu": 2.0}


class CountingDiscovery(Discovery):
    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.maps_reads: dict[int, int] = {}

    def _read(self, pid: int, name: str) -> bytes:
        if name == "maps":
            self.maps_reads[pid] = self.maps_reads.get(pid, 0) + 1
        return super()._read(pid, name)


def test_maps_is_read_a_bounded_number_of_times_per_process(tmp_path: Path) -> None:
    make_proc(tmp_path, 100, ["python3", "serve.py"], "python3", 5)
    (tmp_path / "100" / "maps").write_text(maps_with(MAPPED["lightgbm"]))
    make_proc(tmp_path, 200, ["python3", "idle.py"], "python3", 6)
    (tmp_path / "200" / "maps").write_text(NUMPY_ONLY)
    d = CountingDiscovery(procfs=str(tmp_path), patterns=[], runtimes=True, self_pid=1)
    for _ in range(MAPS_READS + 10):
        d.refresh()
    # Found at once: never read again. Not found: retried while the server may still be
    # importing its framework, then left alone.
    assert d.maps_reads == {100: 1, 200: MAPS_READS}
    assert set(d.snapshot()) == {100}


def test_a_runtime_imported_after_start_is_found_on_a_later_refresh(tmp_path: Path) -> None:
    make_proc(tmp_path, 100, ["python3", "serve.py"], "python3", 5)
    (tmp_path / "100" / "maps").write_text(NUMPY_ONLY)
    d = Discovery(procfs=str(tmp_path), patterns=[], runtimes=True, self_pid=1)
    d.refresh()
    assert not d.snapshot()
    (tmp_path / "100" / "maps").write_text(maps_with(MAPPED["xgboost"]))
    d.refresh()
    assert set(d.snapshot()) == {100}


def test_a_reused_pid_running_another_program_is_looked_at_afresh(tmp_path: Path) -> None:
    make_proc(tmp_path, 100, ["python3", "idle.py"], "python3", 5)
    (tmp_path / "100" / "maps").write_text(NUMPY_ONLY)
    d = CountingDiscovery(procfs=str(tmp_path), patterns=[], runtimes=True, self_pid=1)
    for _ in range(MAPS_READS + 1):
        d.refresh()
    make_proc(tmp_path, 100, ["python3", "serve.py"], "python3", 9)
    (tmp_path / "100" / "maps").write_text(maps_with(MAPPED["jax"]))
    d.refresh()
    assert set(d.snapshot()) == {100}


def test_the_maps_cache_is_bounded_and_what_it_refuses_is_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discovery, "MAPS_CACHE_MAX", 2)
    for pid in (100, 101, 102):
        make_proc(tmp_path, pid, ["python3", f"s{pid}.py"], "python3", pid)
        (tmp_path / str(pid) / "maps").write_text(maps_with(MAPPED["torch"]))
    d = Discovery(procfs=str(tmp_path), patterns=[], runtimes=True, self_pid=1)
    d.refresh()
    assert len(d.snapshot()) == 2
    reg = CollectorRegistry()
    reg.register(d)
    refused = {"reason": "maps_cache_full"}
    assert reg.get_sample_value("vigil_discovery_skipped_processes_total", refused) == 1.0


def test_each_process_added_or_dropped_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_proc(tmp_path, 100, ["python3", "serve.py"], "python3", 5)
    (tmp_path / "100" / "maps").write_text(maps_with(MAPPED["scikit-learn"]))
    d = Discovery(procfs=str(tmp_path), patterns=[], runtimes=True, self_pid=1)
    with caplog.at_level(logging.INFO, logger="vigil.discovery"):
        d.refresh()
        d.refresh()
        (tmp_path / "100" / "cmdline").unlink()  # exits
        (tmp_path / "100" / "cmdline").parent.rename(tmp_path / "gone")
        d.refresh()
        d.refresh()
    msgs = [(r.getMessage(), getattr(r, "pid", None)) for r in caplog.records]
    assert msgs == [("watching process", 100), ("no longer watching process", 100)]
    added = caplog.records[0]
    assert added.reasons == "runtime" and added.cmdline == "python3 serve.py"


def test_a_process_that_flaps_is_logged_once_per_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_proc(tmp_path, 100, ["python3", "-m", "vllm"], "python3", 5)
    d = Discovery(procfs=str(tmp_path), patterns=[r"vllm"], self_pid=1)
    with caplog.at_level(logging.INFO, logger="vigil.discovery"):
        for i in range(10):
            d.set_extra("gpu", ())
            d.refresh()
            (tmp_path / "100").rename(tmp_path / f"away{i}")
            d.refresh()
            (tmp_path / f"away{i}").rename(tmp_path / "100")
    added = [r for r in caplog.records if r.getMessage() == "watching process"]
    assert len(added) == 1


def test_with_patterns_the_user_chose_a_runtime_does_not_make_a_process_watched(
    tmp_path: Path,
) -> None:
    make_proc(tmp_path, 100, ["python3", "serve.py"], "python3", 5)
    (tmp_path / "100" / "maps").write_text(maps_with(MAPPED["torch"]))
    make_proc(tmp_path, 200, ["python3", "mine.py"], "python3", 6)
    d = CountingDiscovery(procfs=str(tmp_path), patterns=[r"mine\.py"], runtimes=False)
    d.refresh()
    assert set(d.snapshot()) == {200} and d.maps_reads == {}


@pytest.mark.parametrize(("flags", "expected"), [([], True), (["--watch", r"mine\.py"], False)])
def test_runtimes_count_only_with_the_default_watch(flags: list[str], expected: bool) -> None:
    from agent.cli import build_config, build_parser
    from agent.collectors import SPECS

    ns = build_parser(SPECS).parse_args(["run", *flags])
    assert build_config(ns, SPECS, env={}).watch_is_default is expected
