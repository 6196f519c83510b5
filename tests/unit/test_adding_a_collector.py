"""README's "Adding a collector", followed once: a tiny collector package written from the
steps, registered next to the real ones, shows up where a user looks — `vigil run --help`,
the environment and the YAML file, docs/configuration.md's generator, `vigil doctor`, and
/metrics with vigil_scrape_collector_success{collector="tiny"} 1 — through the code paths
the real collectors take (the CLI parser, config.resolve, run_doctor, app.Agent)."""

from __future__ import annotations

import asyncio
import importlib
import importlib.machinery
import importlib.util
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
from agentproc import free_port

from agent.cli import build_config, build_parser
from agent.collectors import SPECS
from agent.config import ConfigError, resolve
from agent.doctor import run_doctor

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gen-config-doc"

# The package, file by file, as README's steps describe it.
PACKAGE = {
    "__init__.py": '''"""A constant gauge, for the example: measures nothing, costs nothing,
needs no privilege."""

from agent.registry import CollectorSpec
from tinyvigil.collector import factory
from tinyvigil.doctor import doctor
from tinyvigil.metrics import METRICS
from tinyvigil.settings import TinySettings

SPEC = CollectorSpec(
    name="tiny",
    help="a constant gauge, for the example",
    settings=TinySettings,
    factory=factory,
    doctor=doctor,
    metrics=METRICS,
)
''',
    "settings.py": """from dataclasses import dataclass

from agent.options import SettingError, option


@dataclass(frozen=True)
class TinySettings:
    value: float = option(1.0, "the value exported as vigil_tiny_value.", minimum=0)
    refresh_interval: float = option(2.0, "how often nothing is refreshed.", type="duration")

    def __post_init__(self) -> None:
        if self.value > 100 * self.refresh_interval:
            raise SettingError("value", "more than 100 per second of refresh-interval")
""",
    "metrics.py": """from agent.metrics import MetricSpec

VALUE = MetricSpec("vigil_tiny_value", "gauge", "The configured value.", "tiny")
METRICS = (VALUE,)
""",
    "collector.py": """from tinyvigil.metrics import VALUE


class TinyCollector:
    name = "tiny"

    def __init__(self, settings):
        self.settings = settings

    def start(self):
        pass

    def collect(self):
        family = VALUE.family()
        family.add_metric([], self.settings.value)
        return [family]

    def ready(self):
        return True

    def close(self):
        pass


def factory(ctx, settings):
    return TinyCollector(settings)
""",
    "doctor.py": """from agent.registry import Check


def doctor(settings, paths):
    return [Check("value", True, f"{settings.value:g}, state in {paths.state_dir}")]
""",
}


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[ModuleType]:
    pkg = tmp_path / "pkgs" / "tinyvigil"
    pkg.mkdir(parents=True)
    for name, text in PACKAGE.items():
        (pkg / name).write_text(text)
    sys.path.insert(0, str(pkg.parent))
    try:
        yield importlib.import_module("tinyvigil")
    finally:
        sys.path.remove(str(pkg.parent))
        for name in [m for m in sys.modules if m == "tinyvigil" or m.startswith("tinyvigil.")]:
            del sys.modules[name]


def registered(tiny: ModuleType) -> tuple[Any, ...]:
    # The registration line: agent/collectors/__init__.py's SPECS, one entry longer.
    return (*SPECS, tiny.SPEC)


def test_its_options_are_flags_variables_and_yaml_keys(
    tiny: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    specs = registered(tiny)
    with pytest.raises(SystemExit):
        build_parser(specs).parse_args(["run", "--help"])
    help_text = capsys.readouterr().out
    assert "collector tiny:" in help_text
    assert "--collector.tiny.value X" in help_text
    assert "the value exported as vigil_tiny_value. (default 1.0)" in help_text
    assert "--collector.tiny.refresh-interval DURATION" in help_text

    yaml_file = tmp_path / "vigil.yaml"
    yaml_file.write_text("collectors:\n  tiny:\n    refresh-interval: 500ms\n")
    ns = build_parser(specs).parse_args(["run", "--config", str(yaml_file)])
    config = build_config(ns, specs, env={"VIGIL_COLLECTOR_TINY_VALUE": "7"})
    assert config.settings["tiny"] == tiny.settings.TinySettings(value=7.0, refresh_interval=0.5)

    # Its own check across fields is a usage error naming the key and where it came from.
    with pytest.raises(ConfigError, match=r"collector\.tiny\.value \(from --collector\.tiny"):
        resolve(
            specs,
            flag_values={"collector.tiny.value": "60", "collector.tiny.refresh-interval": "0.5"},
        )


def test_it_is_in_the_generated_configuration_reference(tiny: ModuleType) -> None:
    loader = importlib.machinery.SourceFileLoader("gen_config_doc", str(SCRIPT))
    spec = importlib.util.spec_from_loader("gen_config_doc", loader)
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    text = gen.render(registered(tiny))
    assert "  tiny:\n    enabled: true\n    value: 1.0\n    refresh-interval: 2s\n" in text


def test_vigil_doctor_runs_its_checks(tiny: ModuleType, tmp_path: Path) -> None:
    specs = registered(tiny)
    others = [f"--no-collector.{s.name}" for s in SPECS]
    ns = build_parser(specs).parse_args(["doctor", *others, "--state-dir", str(tmp_path)])
    out = io.StringIO()
    assert run_doctor(build_config(ns, specs, env={}), specs, out) == 0
    report = out.getvalue()
    assert "  tiny     ready\n" in report
    assert f"    ok   value: 1, state in {tmp_path}\n" in report


def test_it_is_scraped_on_metrics(tiny: ModuleType, tmp_path: Path) -> None:
    from agent.app import Agent

    specs = registered(tiny)
    port = free_port()
    argv = [
        *(f"--no-collector.{s.name}" for s in SPECS),
        "--collector.tiny.value",
        "3",
        "--listen",
        f"127.0.0.1:{port}",
        "--state-dir",
        str(tmp_path / "state"),
        "--kubernetes.mode",
        "off",
    ]
    config = build_config(build_parser(specs).parse_args(["run", *argv]), specs, env={})

    async def scrape() -> str:
        agent = Agent(config, specs)
        await agent.start()
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/metrics") as r,
            ):
                assert r.status == 200
                return await r.text()
        finally:
            await agent.stop()

    text = asyncio.run(scrape())
    assert 'vigil_scrape_collector_success{collector="tiny"} 1.0' in text
    assert "vigil_tiny_value 3.0" in text
    assert 'vigil_scrape_collector_success{collector="sched"}' not in text  # switched off
