"""The diagnosis table's row links carry every filter the row can fill on the dashboard
they open, and a link that cannot narrow to the pod is said to in the table's description."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

ROOT = Path(__file__).resolve().parents[2]
BOARDS = ROOT / "dashboards"


def board(uid: str) -> dict[str, Any]:
    (found,) = [
        b for p in BOARDS.glob("*.json") if (b := json.loads(p.read_text())).get("uid") == uid
    ]
    return found


def causes_table() -> dict[str, Any]:
    (panel,) = [
        p for p in board("vigil-diagnosis")["panels"] if p["title"] == "Pods and their causes"
    ]
    return panel


def test_each_row_link_passes_every_variable_the_row_can_fill() -> None:
    panel = causes_table()
    (row_labels,) = re.findall(r"max by \(([^)]*)\)", panel["targets"][0]["expr"])
    row = {label.strip() for label in row_labels.split(",")}
    links = panel["fieldConfig"]["defaults"]["links"]
    assert len(links) == 3
    for link in links:
        url = urlsplit(link["url"])
        uid = url.path.removeprefix("/d/")
        target_vars = {v["name"] for v in board(uid)["templating"]["list"]}
        passed = {
            k.removeprefix("var-"): v for k, v in parse_qsl(url.query) if k.startswith("var-")
        }
        # Every variable of the target board that a row's label fills is passed, from that
        # label; nothing is passed that the board does not have.
        assert set(passed) == target_vars & row, (uid, passed)
        for name, value in passed.items():
            assert value == "${__field.labels." + name + "}"
        assert "${__url_time_range}" in link["url"]


def test_links_that_cannot_reach_the_pod_are_explained() -> None:
    panel = causes_table()
    (caveat,) = [s for s in panel["description"].split(". ") if "not the pod" in s]
    for link in panel["fieldConfig"]["defaults"]["links"]:
        uid = urlsplit(link["url"]).path.removeprefix("/d/")
        has_pod = "pod" in {v["name"] for v in board(uid)["templating"]["list"]}
        # The link's title starts with the name the description uses for it.
        named = link["title"].split(":")[0] in caveat
        assert named != has_pod, (link["title"], caveat)
