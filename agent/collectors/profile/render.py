"""Stacks → speedscope JSON and SVG flamegraphs. Pure functions, no I/O.

The SVG follows flamegraph.pl's layout: one rectangle per frame, the root at the bottom,
children stacked above their caller, widths proportional to samples, siblings sorted by
name so that the same profile always draws the same picture. Each frame carries a
``<title>`` (the browser's tooltip) with its name, samples and share.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from agent.collectors.profile.stacks import Stack, split_frame

SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def to_speedscope(stacks: Mapping[Stack, int], name: str, exporter: str) -> dict[str, Any]:
    """One "sampled" speedscope profile; weights are sample counts (unit "none")."""
    frames: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    samples: list[list[int]] = []
    weights: list[int] = []
    for stack, n in sorted(stacks.items(), key=lambda kv: (-kv[1], kv[0])):
        if n <= 0:
            continue
        row = []
        for frame in stack:
            i = index.get(frame)
            if i is None:
                fname, file, line = split_frame(frame)
                entry: dict[str, Any] = {"name": fname}
                if file:
                    entry["file"] = file
                if line is not None:
                    entry["line"] = line
                i = index[frame] = len(frames)
                frames.append(entry)
            row.append(i)
        samples.append(row)
        weights.append(n)
    total = sum(weights)
    return {
        "$schema": SPEEDSCOPE_SCHEMA,
        "shared": {"frames": frames},
        "profiles": [
            {
                "type": "sampled",
                "name": name,
                "unit": "none",
                "startValue": 0,
                "endValue": total,
                "samples": samples,
                "weights": weights,
            }
        ],
        "name": name,
        "activeProfileIndex": 0,
        "exporter": exporter,
    }


@dataclass
class _Node:
    name: str
    value: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


def _tree(stacks: Mapping[Stack, int]) -> _Node:
    root = _Node("all")
    for stack, n in stacks.items():
        if n <= 0:
            continue
        root.value += n
        node = root
        for frame in stack:
            child = node.children.get(frame)
            if child is None:
                child = node.children[frame] = _Node(frame)
            child.value += n
            node = child
    return root


def _color(name: str) -> str:
    # flamegraph.pl's "hot" palette, seeded by the name so a function keeps its colour.
    h = zlib.crc32(name.encode())
    r = 205 + (h & 0xFF) * 50 // 255
    g = ((h >> 8) & 0xFF) * 230 // 255
    b = ((h >> 16) & 0xFF) * 55 // 255
    return f"rgb({r},{g},{b})"


WIDTH = 1200  # px, flamegraph.pl's default
FRAME_HEIGHT = 16  # px: 12 px text plus padding
FONT_SIZE = 12
CHAR_WIDTH = 0.59 * FONT_SIZE  # average glyph width of a sans-serif face
PAD = 10  # px margin around the graph
TITLE_HEIGHT = 40  # px for the title line and the subtitle
MIN_WIDTH = 0.1  # px: narrower frames are invisible; skipping them bounds the SVG size


def to_svg(stacks: Mapping[Stack, int], title: str, subtitle: str = "") -> str:
    """An SVG flamegraph. Frames narrower than 0.1 px are left out, with their children."""
    root = _tree(stacks)
    total = root.value
    rows: list[tuple[int, float, float, _Node]] = []  # depth, x, width, node

    def place(node: _Node, depth: int, x: float, width: float) -> None:
        rows.append((depth, x, width, node))
        cx = x
        for name in sorted(node.children):
            child = node.children[name]
            w = width * child.value / node.value
            if w >= MIN_WIDTH:
                place(child, depth + 1, cx, w)
            cx += w

    inner = WIDTH - 2 * PAD
    if total > 0:
        place(root, 0, PAD, inner)
    depth = max((r[0] for r in rows), default=0) + 1
    height = TITLE_HEIGHT + depth * FRAME_HEIGHT + 2 * PAD
    out = [
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n',
        f'<svg version="1.1" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}">\n',
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#f8f8f0"/>\n',
        f'<text x="{WIDTH / 2}" y="{PAD + 14}" text-anchor="middle" font-size="17" '
        f'font-family="Verdana, sans-serif">{escape(title)}</text>\n',
        f'<text x="{WIDTH / 2}" y="{PAD + 32}" text-anchor="middle" font-size="12" '
        f'font-family="Verdana, sans-serif" fill="#555">{escape(subtitle)}</text>\n',
    ]
    if total == 0:
        out.append(
            f'<text x="{PAD}" y="{TITLE_HEIGHT + PAD + 12}" font-size="12" '
            'font-family="Verdana, sans-serif">no samples in this window</text>\n'
        )
    out.append(f'<g font-family="Verdana, sans-serif" font-size="{FONT_SIZE}">\n')
    for d, x, w, node in rows:
        y = height - PAD - (d + 1) * FRAME_HEIGHT
        share = 100.0 * node.value / total
        tip = f"{node.name} ({node.value} samples, {share:.2f}%)"
        label = node.name
        fits = int((w - 6) / CHAR_WIDTH)
        if fits < len(label):
            label = label[: fits - 2] + ".." if fits >= 3 else ""
        fill = "rgb(230,230,230)" if d == 0 else _color(node.name)
        out.append(
            f'<g class="frame" data-samples="{node.value}"><title>{escape(tip)}</title>'
            f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{FRAME_HEIGHT - 1}" '
            f'fill={quoteattr(fill)} rx="2" ry="2"/>'
        )
        if label:
            out.append(f'<text x="{x + 3:.2f}" y="{y + FRAME_HEIGHT - 4}">{escape(label)}</text>')
        out.append("</g>\n")
    out.append("</g>\n</svg>\n")
    return "".join(out)
