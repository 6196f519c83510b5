"""Config precedence (defaults < YAML < VIGIL_* env < flags) and rejection of bad input."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.cli import build_config, build_parser, check_collector_flags
from agent.config import ConfigError, parse_duration
from agent.options import SettingError, option
from agent.registry import CollectorSpec


@dataclass(frozen=True)
class GpuLike:
    interval: float = option(5.0, "poll interval", type="duration", minimum=0.1)
    mode: str = option("fast", "mode", choices=("fast", "slow"))
    top_k: int = option(10, "k")
    alpha: float = option(0.05, "a", minimum=1e-12, maximum=1.0)
    low: int = option(1, "lower bound")
    high: int = option(2, "upper bound")

    def __post_init__(self) -> None:
        if self.low >= self.high:
            raise SettingError("low", f"{self.low} is not below high ({self.high})")


@dataclass(frozen=True)
class Nothing:
    pass


def _never(*args: Any) -> Any:
    raise AssertionError("config tests build no collector")


SPECS = (
    CollectorSpec(name="gpu", help="test gpu", settings=GpuLike, factory=_never, doctor=_never),
    CollectorSpec(name="sched", help="test sched", settings=Nothing, factory=_never, doctor=_never),
)


def config(
    tmp_path: Path, argv: list[str], yaml_text: str | None = None, env: dict[str, str] | None = None
):
    parser = build_parser(SPECS)
    if yaml_text is not None:
        f = tmp_path / "vigil.yaml"
        f.write_text(yaml_text)
        argv = ["--config", str(f), *argv]
    check_collector_flags(argv, SPECS)
    ns = parser.parse_args(["run", *argv])
    return build_config(ns, SPECS, env=env or {})


def test_defaults(tmp_path: Path) -> None:
    c = config(tmp_path, [])
    assert c.listen == ":9475"
    assert c.get("collector.gpu.interval") == 5.0
    assert c.enabled("gpu") and c.enabled("sched")
    assert not c.explicitly_enabled("gpu")
    assert c.watch  # the default inference-server patterns


def test_each_layer_overrides_the_one_below(tmp_path: Path) -> None:
    yaml_text = "listen: ':1111'\ncollectors:\n  gpu:\n    interval: 7s\n    top-k: 3\n"
    c = config(tmp_path, [], yaml_text)
    assert (c.listen, c.get("collector.gpu.interval"), c.get("collector.gpu.top-k")) == (
        ":1111",
        7.0,
        3,
    )
    env = {"VIGIL_LISTEN": ":2222", "VIGIL_COLLECTOR_GPU_INTERVAL": "500ms"}
    c = config(tmp_path, [], yaml_text, env)
    assert (c.listen, c.get("collector.gpu.interval"), c.get("collector.gpu.top-k")) == (
        ":2222",
        0.5,
        3,
    )
    c = config(tmp_path, ["--listen", ":3333", "--collector.gpu.interval", "2m"], yaml_text, env)
    assert (c.listen, c.get("collector.gpu.interval"), c.get("collector.gpu.top-k")) == (
        ":3333",
        120.0,
        3,
    )
    assert c.origin["listen"] == "flags"
    assert c.origin["collector.gpu.top-k"].startswith("config file")


def test_collector_switches_through_every_layer(tmp_path: Path) -> None:
    c = config(tmp_path, [], "collectors:\n  gpu:\n    enabled: false\n")
    assert not c.enabled("gpu")
    c = config(
        tmp_path, [], "collectors:\n  gpu:\n    enabled: false\n", {"VIGIL_COLLECTOR_GPU": "true"}
    )
    assert c.enabled("gpu") and c.explicitly_enabled("gpu")
    c = config(tmp_path, ["--no-collector.gpu"], None, {"VIGIL_COLLECTOR_GPU": "true"})
    assert not c.enabled("gpu")
    c = config(tmp_path, ["--collector.sched"])
    assert c.explicitly_enabled("sched")


def test_watch_flag_repeats_and_env_splits(tmp_path: Path) -> None:
    c = config(tmp_path, ["--watch", "a", "--watch", "b"], None, {"VIGIL_WATCH": "x;y"})
    assert c.watch == ["a", "b"]
    c = config(tmp_path, [], None, {"VIGIL_WATCH": "x;y"})
    assert c.watch == ["x", "y"]


@pytest.mark.parametrize(
    ("argv", "yaml_text", "env", "message"),
    [
        ([], "lisen: ':1'\n", None, "unknown key 'lisen'"),
        (
            [],
            "collectors:\n  gpu:\n    intervall: 1\n",
            None,
            "unknown key collectors.gpu.intervall "
            "(allowed: enabled, interval, mode, top-k, alpha, low, high, max-series)",
        ),
        ([], "collectors:\n  nvidia: {}\n", None, "unknown collector 'nvidia'"),
        ([], "collectors:\n  gpu:\n    mode: medium\n", None, "(allowed: fast, slow)"),
        ([], "collectors:\n  gpu:\n    interval: soon\n", None, "is not a duration"),
        ([], "collectors:\n  gpu:\n    top-k: 2.5\n", None, "is not an integer"),
        ([], "- just\n- a list\n", None, "must be a mapping"),
        ([], "listen: [1, 2]\n", None, "is not a string"),
        ([], "key: [unclosed\n", None, "not valid YAML"),
        ([], None, {"VIGIL_LISTN": ":1"}, "unknown environment variable VIGIL_LISTN"),
        ([], None, {"VIGIL_COLLECTOR_GPU": "maybe"}, "VIGIL_COLLECTOR_GPU"),
        (["--collector.gpu.interval", "0"], None, None, "below the minimum"),
        (["--log.level", "loud"], None, None, "(allowed: debug, info, warning, error)"),
        (["--collector.gpu.alpha", "5"], None, None, "above the maximum 1"),
        (["--collector.gpu.alpha", "nan"], None, None, "not a finite number"),
        (
            ["--collector.gpu.low", "5"],
            None,
            None,
            "collector.gpu.low (from --collector.gpu.low): 5 is not below high (2)",
        ),
        (
            [],
            None,
            {"VIGIL_COLLECTOR_GPU_LOW": "3"},
            "collector.gpu.low (from VIGIL_COLLECTOR_GPU_LOW): 3 is not below high (2)",
        ),
        ([], "collectors:\n  gpu:\n    alpha: .inf\n", None, "not a finite number"),
        (["--watch", "(unclosed"], None, None, "not a valid regex"),
        (["--collector.nvidia"], None, None, "unknown collector 'nvidia'"),
        (["--no-collector.nvidia"], None, None, "known: gpu, sched"),
    ],
)
def test_bad_input_names_the_key(
    tmp_path: Path, argv: list[str], yaml_text: str | None, env: dict[str, str] | None, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        config(tmp_path, argv, yaml_text, env)
    assert message in str(err.value)


def test_missing_config_file(tmp_path: Path) -> None:
    parser = build_parser(SPECS)
    ns = parser.parse_args(["run", "--config", str(tmp_path / "nope.yaml")])
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope\.yaml"):
        build_config(ns, SPECS, env={})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5", 5.0), ("5s", 5.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), (" .5s ", 0.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "5x", "-1s", "1e3"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_each_collector_gets_its_settings_dataclass(tmp_path: Path) -> None:
    c = config(tmp_path, ["--collector.gpu.top-k", "3"], "collectors:\n  gpu:\n    interval: 2s\n")
    assert c.settings["gpu"] == GpuLike(interval=2.0, top_k=3)
    assert c.settings["sched"] == Nothing()


def test_the_real_collectors_refuse_bad_values_across_fields() -> None:
    from agent.cli import main

    assert main(["doctor", "--collector.drift.alpha", "1"]) == 2
