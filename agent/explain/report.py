"""The text of `vigil explain`, and the pieces `vigil top` shares with it: pure functions
over the agent's JSON answer (docs/diagnosis.md, "API"), tolerant of keys and causes this
version does not know and of nulls anywhere."""

from __future__ import annotations

import math
import textwrap
import time
from collections.abc import Iterable, Sequence
from typing import Any

from agent.explain.client import DiagnosisError

# The per-target signals, in the order a person reads them (GPU, CPU, Python, inputs,
# service), with the label and unit used by the report and by `vigil top`. The meaning of
# each is docs/diagnosis.md's: the run-queue and off-CPU shares are summed over threads,
# the GIL share is the share of ticks some thread held it.
SIGNALS: tuple[tuple[str, str, str], ...] = (
    ("gpu_utilization_ratio", "GPU busy", "ratio"),
    ("gpu_memory_used_ratio", "GPU memory used", "ratio"),
    ("runqueue_p99_seconds", "run-queue wait p99", "seconds"),
    ("runqueue_wait_ratio", "time waiting for a CPU", "ratio"),
    ("offcpu_ratio", "time off-CPU (sleeping, blocked)", "ratio"),
    ("gil_ratio", "GIL held", "ratio"),
    ("idle_ratio", "Python threads idle", "ratio"),
    ("cpu_throttled_ratio", "CPU quota periods throttled", "ratio"),
    ("drift_detected", "input drift", "bool"),
    ("requests_per_second", "requests", "per_second"),
    ("error_ratio", "failed requests", "ratio"),
    ("latency_p95_seconds", "latency p95", "seconds"),
)
SIGNAL_LABELS = {key: label for key, label, _ in SIGNALS}
SIGNAL_UNITS = {key: unit for key, _, unit in SIGNALS}
SEVERITY_RANK = {"warning": 0, "info": 1}


def target_name(t: dict[str, Any]) -> str:
    """``namespace/pod``, ``pod``, or ``pid N (comm)`` for a process outside any pod."""
    pod, ns = t.get("pod"), t.get("namespace")
    if pod:
        return f"{ns}/{pod}" if ns else str(pod)
    comm = f" ({t['comm']})" if t.get("comm") else ""
    pids = t.get("pids") or [None]
    return f"pid {t.get('pid') or pids[0]}{comm}"


def select_targets(targets: Sequence[dict[str, Any]], query: str | None) -> list[dict[str, Any]]:
    """The targets ``query`` names: a pid, ``NAMESPACE/POD``, a pod name or a unique prefix
    of one. Raises :class:`DiagnosisError` listing the known ones when none match."""
    if query is None:
        return list(targets)
    # isdigit() alone accepts "²", which int() rejects: only ASCII digits are a pid.
    is_pid = query.isascii() and query.isdigit()
    if is_pid:
        pid = int(query)
        found = [t for t in targets if t.get("pid") == pid or pid in (t.get("pids") or ())]
    else:
        found = [
            t for t in targets if query in (t.get("pod"), f"{t.get('namespace')}/{t.get('pod')}")
        ]
        if not found:
            found = [t for t in targets if str(t.get("pod") or "").startswith(query)]
            if len(found) > 1:
                raise DiagnosisError(
                    f"{query!r} is the start of several pods: "
                    + ", ".join(target_name(t) for t in found)
                    + "; give the whole name"
                )
    if found:
        return found
    what = "process" if is_pid else "pod"
    known = ", ".join(target_name(t) for t in targets) or "none"
    raise DiagnosisError(f"no watched {what} {query!r}; the agent watches: {known}")


def signals_of(t: dict[str, Any]) -> dict[str, Any]:
    """A target's signals; an agent that sent none (or not an object) has none."""
    signals = t.get("signals")
    return signals if isinstance(signals, dict) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def fmt_value(value: Any, unit: str | None) -> str:
    """A signal's value for people: ratios in %, seconds in us/ms/s, flags as yes/no."""
    if value is None:
        return "-"
    if isinstance(value, bool) or unit in ("bool", "boolean"):
        return "yes" if value else "no"
    v = _number(value)
    if v is None:
        return str(value)
    if unit == "ratio":
        pct = v * 100
        digits = 0 if pct == 0 or abs(pct) >= 10 else 1 if abs(pct) >= 1 else 2
        return f"{pct:.{digits}f} %"
    if unit == "seconds":
        if abs(v) >= 1:
            return f"{v:.2f} s"
        if abs(v) >= 1e-3:
            return f"{v * 1e3:.3g} ms"
        return f"{v * 1e6:.3g} us"
    if unit in ("per_second", "requests_per_second"):
        return f"{v:.3g}/s"
    return f"{v:.3g} {unit}" if unit else f"{v:.3g}"


def fmt_window(seconds: Any) -> str:
    v = _number(seconds)
    if v is None:
        return "-"
    return f"{v / 60:.3g} min" if v >= 120 else f"{v:.3g} s"


def fmt_age(seconds: float) -> str:
    """How long ago, in the largest unit that keeps it readable."""
    s = max(seconds, 0.0)
    if s < 120:
        return f"{s:.0f} s ago"
    if s < 2 * 3600:
        return f"{s / 60:.0f} min ago"
    if s < 2 * 86400:
        return f"{s / 3600:.0f} h ago"
    return f"{s / 86400:.0f} days ago"


def cause_order(causes: Iterable[Any]) -> list[dict[str, Any]]:
    """Warnings before infos, the engine's order kept within each."""
    valid = [c for c in causes if isinstance(c, dict) and c.get("cause")]
    return sorted(valid, key=lambda c: SEVERITY_RANK.get(str(c.get("severity")), 2))


def verdict(t: dict[str, Any], window: Any) -> list[str]:
    """The first lines of a target's report: what is wrong, in one line per cause."""
    causes = cause_order(t.get("causes") or ())
    if causes:
        return [
            f"{c['cause']} ({c.get('severity') or 'unrated'})"
            + (f": {c['summary']}" if c.get("summary") else "")
            for c in causes
        ]
    if t.get("status") == "ok":
        return [f"healthy: no cause holds over the last {fmt_window(window)}"]
    missing = [str(m) for m in t.get("missing") or ()]
    why = f" ({missing[0]})" if missing else ""
    return [f"not enough evidence yet{why}"]


def _table(rows: Sequence[Sequence[str]], indent: str) -> list[str]:
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        (indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))).rstrip()
        for r in rows
    ]


def _wrap(text: str, indent: str, width: int, hang: str | None = None) -> list[str]:
    """``text`` filled to ``width``, continuation lines under ``hang`` (default: indent)."""
    return textwrap.wrap(
        text,
        width=width,
        initial_indent=indent,
        subsequent_indent=" " * len(indent) if hang is None else hang,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [indent.rstrip()]


def group_missing(missing: Iterable[Any]) -> list[str]:
    """``"a: why"`` and ``"b: why"`` as one ``"a, b: why"``, in the order first seen: a
    process without a GPU is one line, not one per GPU signal."""
    groups: dict[str, list[str]] = {}
    for m in missing:
        name, sep, why = str(m).partition(": ")
        key = why if sep else str(m)
        groups.setdefault(key, [])
        if sep:
            groups[key].append(name)
    return [f"{', '.join(names)}: {why}" if names else why for why, names in groups.items()]


def _signal_unit(key: str, value: Any) -> str | None:
    """The unit of a signal this version does not list, from its name (base units)."""
    if isinstance(value, bool):
        return "bool"
    for suffix in ("ratio", "seconds"):
        if key.endswith("_" + suffix):
            return suffix
    return None


def render_target(t: dict[str, Any], window: Any, width: int = 100) -> list[str]:
    where = [f"container {t['container']}"] if t.get("container") else []
    if t.get("pod"):
        pids = t.get("pids") or ([t["pid"]] if t.get("pid") is not None else [])
        if pids:
            where.append("pid " + ", ".join(str(p) for p in pids))
        if t.get("comm"):
            where.append(str(t["comm"]))
    models = [str(m) for m in t.get("models") or () if m]
    if models:
        where.append(("model " if len(models) == 1 else "models ") + ", ".join(models))
    lines = [target_name(t) + (f"  ({', '.join(where)})" if where else "")]
    head = "  verdict: "
    for i, v in enumerate(verdict(t, window)):
        lines += _wrap(v, head if i == 0 else " " * len(head), width, " " * (len(head) + 2))

    causes = cause_order(t.get("causes") or ())
    evidence: list[list[str]] = []
    for c in causes:
        items = [e for e in c.get("evidence") or () if isinstance(e, dict)]
        for i, e in enumerate(items):
            unit = e.get("unit")
            signal = str(e.get("signal"))
            threshold = e.get("threshold")
            evidence.append(
                [
                    str(c["cause"]) if i == 0 else "",
                    SIGNAL_LABELS.get(signal, signal),
                    fmt_value(e.get("value"), unit),
                    "-" if threshold is None else fmt_value(threshold, unit),
                    fmt_window(e.get("window_seconds") or window),
                ]
            )
    if evidence:
        titles = ["cause", "signal", "value", "threshold", "window"]
        lines += ["", "  evidence:", *_table([titles, *evidence], "    ")]

    advice = [c for c in causes if c.get("why") or c.get("advice") or c.get("runbook")]
    if advice:
        lines += ["", "  what to do:"]
        for c in advice:
            lines += _wrap(
                f"{c['cause']}: {c.get('advice') or '(no advice given)'}", "    ", width, "      "
            )
            if c.get("why"):
                lines += _wrap(f"why: {c['why']}", "      ", width, "        ")
            if c.get("runbook"):
                lines.append(f"      runbook: {c['runbook']}")

    hot = [h for h in t.get("hot_functions") or () if isinstance(h, dict)]
    if hot:
        rows = [["self", "total", "function"]] + [
            [
                fmt_value(h.get("self_ratio"), "ratio"),
                fmt_value(h.get("total_ratio"), "ratio"),
                str(h.get("function")),
            ]
            for h in hot
        ]
        lines += ["", "  hottest Python functions:", *_table(rows, "    ")]

    signals = signals_of(t)
    known = [
        [label, fmt_value(signals[key], unit)]
        for key, label, unit in SIGNALS
        if signals.get(key) is not None
    ]
    # Signals a newer agent sends that this version has no label for: shown by name.
    known += [
        [key, fmt_value(value, _signal_unit(key, value))]
        for key, value in signals.items()
        if key not in SIGNAL_LABELS and value is not None
    ]
    if known:
        lines += ["", f"  signals (last {fmt_window(window)}):", *_table(known, "    ")]
    missing = group_missing(t.get("missing") or ())
    if missing:
        lines += ["", "  not measured:"]
        for m in missing:
            lines += _wrap(m, "    ", width, "      ")
    return lines


def render_report(
    doc: dict[str, Any],
    targets: Sequence[dict[str, Any]],
    agent: str,
    now: float | None = None,
    width: int = 100,
) -> str:
    window = doc.get("window_seconds")
    generated = _number(doc.get("generated_at"))
    when = ""
    if generated is not None:
        age = (time.time() if now is None else now) - generated
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(generated))
        when = f", diagnosed {stamp} ({fmt_age(age)})"
    n = len(targets)
    head = "\n".join(
        _wrap(
            f"vigil explain: {n} watched {'process' if n == 1 else 'processes'} at {agent}{when}",
            "",
            width,
            "  ",
        )
    )
    if not targets:
        return head + "\nthe agent watches no process yet (`vigil doctor` tells which it would)"
    blocks = ["\n".join(render_target(t, window, width)) for t in targets]
    return head + "\n\n" + "\n\n".join(blocks)


def severity_key(t: dict[str, Any]) -> tuple[int, str]:
    """Worst first: a warning, an info, not enough evidence, healthy; then by name."""
    ranks = [
        SEVERITY_RANK.get(str(c.get("severity")), 2) for c in cause_order(t.get("causes") or ())
    ]
    rank = min(ranks) if ranks else 4 if t.get("status") == "ok" else 3
    return rank, target_name(t)
