"""docs/configuration.md's example is a valid file that names every setting, at its default."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from agent.collectors import SPECS
from agent.config import all_fields, flatten_yaml, resolve

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def example() -> str:
    m = re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert m, "no yaml example in docs/configuration.md"
    return m.group(1)


def test_example_is_accepted_and_names_every_setting() -> None:
    flat = flatten_yaml(yaml.safe_load(example()), "docs/configuration.md", SPECS)
    assert set(flat) == set(all_fields(SPECS)), "the example and the code disagree on keys"


def test_example_values_are_the_defaults() -> None:
    flat = flatten_yaml(yaml.safe_load(example()), "docs/configuration.md", SPECS)
    from_doc = resolve(SPECS, yaml_values=flat).values
    defaults = resolve(SPECS).values
    from_doc["state-dir"] = from_doc["state-dir"] or None  # "" and unset mean the same
    assert from_doc == defaults


def test_the_file_is_what_the_generator_writes() -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "scripts" / "gen-config-doc"
    r = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
