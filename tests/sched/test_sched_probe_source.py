"""probes/sched.bpf.c against agent/collectors/sched/probe.py: the names its comments send
a reader to exist there, and every size it requires as a -D flag is passed."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from agent.collectors.sched import probe

SOURCE = (Path(__file__).resolve().parents[2] / "probes" / "sched.bpf.c").read_text()


def comments() -> str:
    return "\n".join(m.group(1) for m in re.finditer(r"//(.*)", SOURCE))


def test_names_the_probe_source_cites_from_probe_py_exist() -> None:
    # "probe.py (A, B; passed by f)": each identifier in the parentheses.
    cited = re.findall(r"probe\.py \(([^)]*)\)", " ".join(comments().split()))
    assert cited, "the probe source no longer says where its sizes come from"
    known = set(vars(probe)) | set(inspect.signature(probe.probe_cflags).parameters)
    for group in cited:
        names = re.findall(r"\b[A-Za-z_][A-Za-z0-9_]*\b", group)
        names = [n for n in names if "_" in n or n.isupper()]
        assert names, group
        assert [n for n in names if n not in known] == [], group


def test_every_size_the_probe_requires_is_passed_as_a_flag() -> None:
    (required,) = re.findall(r"#if (!defined\(.*)", SOURCE)
    macros = set(re.findall(r"defined\((\w+)\)", required))
    passed = {f.removeprefix("-D").split("=")[0] for f in probe.probe_cflags("watched", 1024)}
    assert macros and macros <= passed
