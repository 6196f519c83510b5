"""`vigil top`: the agent's diagnosis, live, one row per watched pod or process.

Built on Textual (keys, a table that redraws only what changed, works in tmux and over
SSH with any xterm-like TERM). Only `vigil top` imports this module: the agent and every
other command never load the UI library. The row contents, the columns that fit a
terminal and the sort order are pure functions (:func:`row_cells`, :func:`fit_columns`,
:func:`sort_rows`), tested without a terminal; the app around them only fetches, in a
worker thread so that a slow agent never freezes the keys, and redraws.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.explain.client import Agent, DiagnosisError
from agent.explain.report import (
    SIGNAL_UNITS,
    cause_order,
    fmt_value,
    render_target,
    severity_key,
    signals_of,
    target_name,
)


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    width: int
    # Which columns go first when the terminal is narrow: the highest number first, and
    # among equals the rightmost. 0 never goes (without the pod and its cause a row says
    # nothing).
    drop: int
    # Numbers sort largest first (the worst run queue on top), names A to Z.
    descending: bool = True

    @property
    def cells(self) -> int:
        """Its width on screen: room for the header and the sort mark, and the padding."""
        return max(self.width, len(self.header) + 2) + CELL_PADDING


COLUMNS: tuple[Column, ...] = (
    Column("target", "POD", 20, 0, descending=False),
    Column("cause", "CAUSE", 15, 0, descending=False),
    Column("gpu", "GPU", 4, 1),
    Column("mem", "MEM", 4, 2),
    Column("rq_p99", "RQ P99", 6, 1),
    Column("rq_wait", "WAIT", 4, 1),
    Column("offcpu", "OFF", 4, 3),
    Column("gil", "GIL", 4, 2),
    Column("top_fn", "TOP FUNCTION", 20, 5, descending=False),
    Column("drift", "DRIFT", 5, 4),
    Column("rps", "REQ/S", 6, 4),
    Column("errors", "ERR", 5, 4),
    Column("p95", "P95", 6, 3),
)
BY_KEY = {c.key: c for c in COLUMNS}
# Textual's DataTable pads every cell with one space on each side.
CELL_PADDING = 2
# The pod column takes what the others leave, up to this: longer names are truncated.
TARGET_MAX_WIDTH = 40
# Then the hottest function's name takes what is left, up to this.
FUNCTION_MAX_WIDTH = 50

# Which signal each numeric column shows (its unit comes from report.SIGNALS).
_SIGNAL_COLUMNS = {
    "gpu": "gpu_utilization_ratio",
    "mem": "gpu_memory_used_ratio",
    "rq_p99": "runqueue_p99_seconds",
    "rq_wait": "runqueue_wait_ratio",
    "offcpu": "offcpu_ratio",
    "gil": "gil_ratio",
    "drift": "drift_detected",
    "rps": "requests_per_second",
    "errors": "error_ratio",
    "p95": "latency_p95_seconds",
}


def _compact(value: Any, unit: str) -> str:
    """``fmt_value`` without its spaces: ``38%``, ``41ms`` fit a 4-6 character column."""
    return fmt_value(value, unit).replace(" ", "").replace("/s", "")


def cause_cell(t: dict[str, Any]) -> str:
    causes = cause_order(t.get("causes") or ())
    if causes:
        more = f" +{len(causes) - 1}" if len(causes) > 1 else ""
        return f"{causes[0]['cause']}{more}"
    return "ok" if t.get("status") == "ok" else "no evidence"


def row_cells(t: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """Each column's text and sort value for one target (sort value None: unknown)."""
    signals = signals_of(t)
    cells: dict[str, tuple[str, Any]] = {
        "target": (target_name(t), target_name(t)),
        "cause": (cause_cell(t), severity_key(t)),
    }
    for key, signal in _SIGNAL_COLUMNS.items():
        value, unit = signals.get(signal), SIGNAL_UNITS[signal]
        number = (
            float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        )
        cells[key] = (
            _compact(value, unit),
            bool(value) if unit == "bool" and value is not None else number,
        )
    hot = [h for h in t.get("hot_functions") or () if isinstance(h, dict) and h.get("function")]
    fn = str(hot[0]["function"]) if hot else ""
    cells["top_fn"] = (fn or "-", fn or None)
    return cells


def fit_columns(width: int, columns: Sequence[Column] = COLUMNS) -> list[Column]:
    """The columns that fit ``width`` terminal cells, in their order."""
    kept = list(columns)

    def needed() -> int:
        return sum(c.cells for c in kept)

    while needed() > width:
        droppable = [c for c in kept if c.drop > 0]
        if not droppable:
            break
        worst = max(droppable, key=lambda c: (c.drop, kept.index(c)))
        kept.remove(worst)
    return kept


def flex_widths(width: int, kept: Sequence[Column]) -> dict[str, int]:
    """Each column's text width: the declared one, and what the terminal has to spare
    given to the pod name (up to TARGET_MAX_WIDTH) then to the function name."""
    widths = {c.key: c.cells - CELL_PADDING for c in kept}
    spare = max(width - sum(c.cells for c in kept), 0)
    for key, limit in (("target", TARGET_MAX_WIDTH), ("top_fn", FUNCTION_MAX_WIDTH)):
        if key in widths:
            grow = min(spare, max(limit - widths[key], 0))
            widths[key] += grow
            spare -= grow
    return widths


def truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "~"


def matches(t: dict[str, Any], needle: str) -> bool:
    """The filter: a case-insensitive part of the pod, namespace, process or a cause."""
    if not needle:
        return True
    hay = [target_name(t), str(t.get("comm") or ""), str(t.get("pid") or "")]
    hay += [str(c.get("cause")) for c in cause_order(t.get("causes") or ())]
    needle = needle.lower()
    return any(needle in h.lower() for h in hay)


def sort_rows(
    rows: Sequence[dict[str, tuple[str, Any]]], key: str, reverse: bool
) -> list[dict[str, tuple[str, Any]]]:
    """By ``key``: unknown values last whatever the direction, ties by pod name."""
    descending = BY_KEY[key].descending != reverse
    known = [r for r in rows if r[key][1] is not None]
    unknown = [r for r in rows if r[key][1] is None]
    known.sort(key=lambda r: r["target"][1])
    known.sort(key=lambda r: r[key][1], reverse=descending)
    unknown.sort(key=lambda r: r["target"][1])
    return known + unknown


def run_top(agent: Agent, interval: float) -> int:
    """Runs the view until the user quits; 0 then."""
    app = _make_app(agent, interval, agent.diagnosis)
    app.run()
    return 0


def _make_app(agent: Agent, interval: float, fetch: Callable[[], dict[str, Any]]) -> Any:
    # Textual is imported here, not at the top: `vigil top` is its only user.
    from rich.text import Text
    from textual.app import App, ComposeResult
    from textual.binding import Binding
    from textual.containers import VerticalScroll
    from textual.screen import Screen
    from textual.widgets import DataTable, Footer, Input, Static

    class Detail(Screen[None]):
        """One target's whole `vigil explain` report, as of the last refresh."""

        BINDINGS = [
            Binding("escape", "app.pop_screen", "back"),
            Binding("q", "app.pop_screen", "back"),
        ]

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

        def compose(self) -> ComposeResult:
            # Text, not markup: pod and function names may hold [brackets].
            with VerticalScroll():
                yield Static(Text(self.text))
            yield Footer()

        def on_mount(self) -> None:
            # Focused, so that arrows, Page Up/Down, Home and End scroll the report.
            self.query_one(VerticalScroll).focus()

    class TopApp(App[None]):
        TITLE = "vigil top"
        # Its key (ctrl+p) and footer entry are of no use here and cost a footer slot.
        ENABLE_COMMAND_PALETTE = False
        CSS = """
        #status { height: auto; max-height: 3; padding: 0 1; background: $panel; }
        #status.error { background: $error; color: $text; }
        #filter { display: none; }
        #filter.shown { display: block; }
        """
        BINDINGS = [
            Binding("q", "quit", "quit"),
            # What a person types to leave any terminal program over SSH.
            Binding("ctrl+c", "quit", "quit", show=False),
            Binding("enter", "details", "details"),
            Binding("s", "sort(1)", "sort"),
            Binding("S", "sort(-1)", "sort back", show=False),
            Binding("r", "reverse", "reverse"),
            Binding("slash", "filter", "filter"),
            Binding("escape", "clear_filter", "clear filter", show=False),
        ]

        def __init__(self) -> None:
            super().__init__()
            self.targets: list[dict[str, Any]] = []
            self.error: str | None = None
            self.updated: float | None = None
            self.sort_key = "cause"
            self.reverse = False
            self.needle = ""
            self.columns_shown: list[Column] = []
            self.rows_shown: list[dict[str, Any]] = []
            self.window: Any = None

        def compose(self) -> ComposeResult:
            # Kept, not queried: a query asks the screen on top, which over a report is
            # not the list, and a refresh must still reach the list there.
            self.status = Static(f"vigil top: asking {agent.url} ...", id="status")
            self.table: DataTable[Text] = DataTable(
                id="table", cursor_type="row", zebra_stripes=True
            )
            self.filter_box = Input(
                placeholder="filter: part of a pod, process or cause", id="filter"
            )
            yield self.status
            yield self.table
            yield self.filter_box
            yield Footer()

        def on_mount(self) -> None:
            self.table.focus()
            self.refresh_now()
            self.set_interval(interval, self.refresh_now)

        def refresh_now(self) -> None:
            self.run_worker(self._fetch, thread=True, exclusive=True, group="fetch")

        def _fetch(self) -> None:
            try:
                doc = fetch()
            except DiagnosisError as exc:
                self.call_from_thread(self._failed, str(exc))
                return
            self.call_from_thread(self._got, doc)

        def _got(self, doc: dict[str, Any]) -> None:
            self.targets, self.error, self.updated = doc["targets"], None, time.time()
            self.window = doc.get("window_seconds")
            self.redraw()

        def _failed(self, message: str) -> None:
            # The last rows stay on screen under the error: what was known is still useful.
            self.error = message
            self.redraw()

        def on_resize(self) -> None:
            self.redraw()

        def redraw(self) -> None:
            width = self.size.width
            visible = fit_columns(width)
            if self.sort_key not in [c.key for c in visible]:
                self.sort_key = "cause"
            shown = [t for t in self.targets if matches(t, self.needle)]
            # Each row remembers its target (two containers of one pod share a name).
            cells = [{**row_cells(t), "_index": ("", i)} for i, t in enumerate(shown)]
            rows = sort_rows(cells, self.sort_key, self.reverse)
            self.rows_shown = [shown[r["_index"][1]] for r in rows]
            table = self.table
            cursor = table.cursor_row
            table.clear(columns=True)
            widths = flex_widths(width, visible)
            for c in visible:
                mark = ""
                if c.key == self.sort_key:
                    mark = " ^" if (c.descending == self.reverse) else " v"
                table.add_column(c.header + mark, width=widths[c.key], key=c.key)
            for r in rows:
                table.add_row(*(Text(truncate(r[c.key][0], widths[c.key])) for c in visible))
            if rows:
                table.move_cursor(row=min(cursor, len(rows) - 1))
            self.columns_shown = visible
            self._status(len(rows))

        def _status(self, shown: int) -> None:
            status = self.status
            if self.error:
                status.add_class("error")
                status.update(Text(f"{self.error} -- retrying every {interval:g} s"))
                return
            status.remove_class("error")
            total = len(self.targets)
            count = f"{shown} of {total}" if self.needle else str(total)
            stamp = time.strftime("%H:%M:%S", time.localtime(self.updated or time.time()))
            header = BY_KEY[self.sort_key].header
            flt = f"  filter '{self.needle}'" if self.needle else ""
            status.update(
                Text(f"{count} watched  sort {header}{flt}  updated {stamp}  {agent.url}")
            )

        def action_sort(self, step: int) -> None:
            keys = [c.key for c in self.columns_shown] or ["cause"]
            at = keys.index(self.sort_key) if self.sort_key in keys else 0
            self.sort_key = keys[(at + step) % len(keys)]
            self.reverse = False
            self.redraw()

        def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
            # Over a report, the list's keys would act on a table nobody sees.
            list_keys = ("sort", "reverse", "filter", "details")
            return not (len(self.screen_stack) > 1 and action in list_keys)

        def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
            self.action_details()

        def action_details(self) -> None:
            row = self.table.cursor_row
            if not 0 <= row < len(self.rows_shown):
                return
            stamp = time.strftime("%H:%M:%S", time.localtime(self.updated or time.time()))
            lines = render_target(self.rows_shown[row], self.window, max(self.size.width - 2, 40))
            lines += ["", f"  as of {stamp}; Escape goes back to the list"]
            self.push_screen(Detail("\n".join(lines)))

        def action_reverse(self) -> None:
            self.reverse = not self.reverse
            self.redraw()

        def action_filter(self) -> None:
            box = self.filter_box
            box.add_class("shown")
            box.value = self.needle
            box.focus()

        def action_clear_filter(self) -> None:
            box = self.filter_box
            box.value = ""
            box.remove_class("shown")
            self.needle = ""
            self.table.focus()
            self.redraw()

        def on_input_changed(self, event: Input.Changed) -> None:
            self.needle = event.value.strip()
            self.redraw()

        def on_input_submitted(self, event: Input.Submitted) -> None:
            event.input.remove_class("shown")
            self.table.focus()

    return TopApp()
