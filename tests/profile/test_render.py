"""Speedscope JSON and SVG flamegraphs from stacks (pure)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from agent.collectors.profile.render import MIN_WIDTH, WIDTH, to_speedscope, to_svg

NS = {"s": "http://www.w3.org/2000/svg"}
STACKS = {
    ("<module> (w.py:1)", "hot (w.py:2)"): 70,
    ("<module> (w.py:1)", "warm (w.py:7)"): 30,
}


def frames(svg: str) -> list[tuple[str, float, float, float, int]]:
    """(name, x, y, width, samples) per frame, parsed back out of the SVG."""
    root = ET.fromstring(svg)
    out = []
    for g in root.iterfind(".//s:g[@class='frame']", NS):
        title = g.find("s:title", NS)
        rect = g.find("s:rect", NS)
        assert title is not None and title.text is not None and rect is not None
        name = title.text.rsplit(" (", 1)[0]
        out.append(
            (
                name,
                float(rect.get("x", "")),
                float(rect.get("y", "")),
                float(rect.get("width", "")),
                int(g.get("data-samples", "")),
            )
        )
    return out


def test_speedscope_document() -> None:
    doc = to_speedscope(STACKS, "demo", "vigil@test")
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    assert doc["shared"]["frames"] == [
        {"name": "<module>", "file": "w.py", "line": 1},
        {"name": "hot", "file": "w.py", "line": 2},
        {"name": "warm", "file": "w.py", "line": 7},
    ]
    prof = doc["profiles"][0]
    assert prof["type"] == "sampled" and prof["unit"] == "none"
    assert prof["samples"] == [[0, 1], [0, 2]]
    assert prof["weights"] == [70, 30]
    assert (prof["startValue"], prof["endValue"]) == (0, 100)
    assert doc["activeProfileIndex"] == 0 and doc["exporter"] == "vigil@test"


def test_speedscope_of_unparseable_frames_and_nothing() -> None:
    doc = to_speedscope({("native",): 2, ("zero",): 0}, "n", "x")
    assert doc["shared"]["frames"] == [{"name": "native"}]
    assert to_speedscope({}, "n", "x")["profiles"][0]["samples"] == []


def test_svg_widths_are_proportional_to_samples() -> None:
    got = {f[0]: f for f in frames(to_svg(STACKS, "t"))}
    assert set(got) == {"all", "<module> (w.py:1)", "hot (w.py:2)", "warm (w.py:7)"}
    full = got["all"][3]
    assert full == pytest.approx(WIDTH - 20)
    assert got["hot (w.py:2)"][3] / full == pytest.approx(0.7, abs=0.001)
    assert got["warm (w.py:7)"][3] / full == pytest.approx(0.3, abs=0.001)
    # Children sit above their parent (flame orientation) and side by side.
    assert got["hot (w.py:2)"][2] < got["<module> (w.py:1)"][2] < got["all"][2]
    assert got["warm (w.py:7)"][1] == pytest.approx(got["hot (w.py:2)"][1] + 0.7 * full, abs=0.02)
    assert got["hot (w.py:2)"][4] == 70


def test_svg_escapes_names_and_titles() -> None:
    svg = to_svg({("<module> (a&b.py:1)", 'q"uote'): 1}, "t <&>", "s & s")
    names = [f[0] for f in frames(svg)]  # parses, so the markup is well formed
    assert "<module> (a&b.py:1)" in names and 'q"uote' in names
    assert "t <&>" in (ET.fromstring(svg).findtext("s:text", namespaces=NS) or "")


def test_svg_leaves_out_invisible_frames() -> None:
    stacks = {("main", "big"): 10**7, ("main", "tiny", "child"): 1}
    names = [f[0] for f in frames(to_svg(stacks, "t"))]
    assert "big" in names and "tiny" not in names and "child" not in names
    assert MIN_WIDTH > 0


def test_svg_of_an_empty_window_is_valid_and_says_so() -> None:
    svg = to_svg({}, "t")
    assert frames(svg) == []
    assert "no samples in this window" in svg


def test_svg_labels_are_truncated_to_fit() -> None:
    long = "f" * 500
    svg = to_svg({("a", long): 99, ("a", "b"): 1}, "t")
    texts = [t.text or "" for t in ET.fromstring(svg).iterfind(".//s:g/s:text", NS)]
    label = next(t for t in texts if t.startswith("fff"))
    assert label.endswith("..") and 100 < len(label) < 200  # ~1170 px of 7 px glyphs
    assert long in [f[0] for f in frames(svg)]  # the tooltip keeps the whole name
