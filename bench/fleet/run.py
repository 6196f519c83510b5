"""What N Vigil nodes cost the Prometheus that stores them, raw series vs recording rules.

For each N: writes the OpenMetrics of N simulated nodes (bench/fleet/simulate.py: a real
agent's exposition with label values varied; pods churning, GPUs per node from a mix) for
a stretch of scrapes, backfills it with `promtool tsdb create-blocks-from openmetrics`,
starts the real Prometheus on the TSDB, backfills Vigil's recording rules with `promtool
tsdb create-blocks-from rules` (in dependency stages: a rule that reads a recorded series
runs after the rule that records it), restarts Prometheus so it sees them, and measures
side by side in one run:

- series and samples in the TSDB, bytes per sample (promtool tsdb list), raw and recorded;
- series alive at the end of the stretch (an instant count);
- the query time of every fleet dashboard panel (one that reads a recorded series) as the
  dashboard runs it (a range query over the stretch, 30 s step) and with the recorded
  series replaced by the raw expressions they record: the ratio is what the rules save;
- the query time of every alert expression and of every recording rule (an instant query
  at the end: what one evaluation costs Prometheus); an alert that reads a recorded series
  also with that series replaced by the raw expression it records (the alert before the
  recording rule), next to the alert plus the rules it reads (the alert after).

Usage: .venv/bin/python bench/fleet/run.py [--nodes 100,300] [--minutes 30] [--step 30]
Needs `prometheus` and `promtool` (Debian packages). Times are medians of --repeat runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from simulate import Template, plan, write  # noqa: E402

RULES = ROOT / "alerts" / "vigil.rules.yml"
DASHBOARDS = ROOT / "dashboards"
CHUNK_NODES = 50  # nodes per OpenMetrics file: bounds the file on disk (~0.5 GB at 1 h)
# Grafana's variables at "All" (their allValue), and the rate window of the recording rules.
VARIABLES = {"__rate_interval": "1m", "__range": "30m", "datasource": ""}
_VAR = re.compile(r"\$\{?(\w+)\}?")
_RECORDED = re.compile(r"\b([a-z][a-z0-9_]*:[a-z0-9_]+:[a-z0-9_]+)(\{[^}]*\})?")


def load_rules() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(recording rules as (name, expr), alert rules as (name, expr)) of the rule file."""
    import yaml

    doc = yaml.safe_load(RULES.read_text())
    recs, alerts = [], []
    for g in doc["groups"]:
        for r in g["rules"]:
            if "record" in r:
                recs.append((r["record"], " ".join(str(r["expr"]).split())))
            else:
                alerts.append((r["alert"], " ".join(str(r["expr"]).split())))
    return recs, alerts


def stages(recs: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Recording rules in dependency order: promtool backfills each rule from what the TSDB
    already holds, so a rule that reads a recorded series waits for a later stage."""
    names = {n for n, _ in recs}
    done: set[str] = set()
    out = []
    left = list(recs)
    while left:
        stage = [
            (n, e)
            for n, e in left
            if not ({m.group(1) for m in _RECORDED.finditer(e)} & names) - done
        ]
        if not stage:
            raise ValueError("recording rules depend on each other in a cycle")
        out.append(stage)
        done |= {n for n, _ in stage}
        left = [r for r in left if r not in stage]
    return out


def inline(expr: str, recs: dict[str, str]) -> str:
    """``expr`` with every recorded series replaced by the raw expression it records; the
    selector's fixed matchers (not the all-matching ``=~".*"``) go into each raw selector."""
    for _ in range(10):
        m = _RECORDED.search(expr)
        if m is None:
            return expr
        inner = recs[m.group(1)]
        fixed = [
            x.strip()
            for x in (m.group(2) or "{}")[1:-1].split(",")
            if x.strip() and not x.strip().endswith('=~".*"')
        ]
        if fixed:
            add = ", ".join(fixed)
            inner = re.sub(
                r"\b(vigil_[a-z0-9_]+)(\{([^}]*)\})?",
                lambda s, add=add: (
                    f"{s.group(1)}{{{(s.group(3) + ', ') if s.group(3) else ''}{add}}}"
                ),
                inner,
            )
        expr = expr[: m.start()] + f"({inner})" + expr[m.end() :]
    raise ValueError(f"recording rules nested too deep in {expr}")


def fleet_panels() -> list[tuple[str, str]]:
    """(dashboard: panel [ref], expr) of every dashboard query that reads a recorded series."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for t in panel.get("targets", []):
                expr = _VAR.sub(lambda m: VARIABLES.get(m.group(1), ".*"), t["expr"])
                if _RECORDED.search(expr):
                    where = f"{path.stem.removeprefix('vigil-')}: {panel['title']} [{t['refId']}]"
                    out.append((where, expr))
    return out


# --- Prometheus and promtool -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]

    def get(self, path: str, timeout: float = 300.0, **params: str) -> Any:
        q = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{q}", timeout=timeout) as r:
            doc = json.loads(r.read())
        if doc.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {doc}")
        return doc["data"]

    def timed(self, repeat: int, path: str, **params: str) -> tuple[float, int]:
        """Median wall seconds of ``repeat`` identical queries, and the series returned."""
        times, n = [], 0
        for _ in range(repeat):
            t0 = time.perf_counter()
            data = self.get(path, **params)
            times.append(time.perf_counter() - t0)
            n = len(data["result"]) if isinstance(data["result"], list) else 1
        return statistics.median(times), n


@contextmanager
def prometheus(data: Path, work: Path) -> Iterator[Prometheus]:
    port = free_port()
    cfg = work / "prometheus.yml"
    cfg.write_text("global:\n  evaluation_interval: 30s\n")
    log = open(work / "prometheus.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={cfg}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=3650d",
            "--query.max-samples=200000000",
            "--query.timeout=10m",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    prom = Prometheus(f"http://127.0.0.1:{port}", proc)
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                with urllib.request.urlopen(prom.url + "/-/ready", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("prometheus did not start; see " + str(work / "prometheus.log"))
            time.sleep(0.5)
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def run(*argv: str, cwd: Path | None = None) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}...: {res.stdout[-2000:]}{res.stderr[-2000:]}")
    return res.stdout


@dataclass
class Blocks:
    series: int = 0
    samples: int = 0
    bytes: int = 0
    chunk_bytes: int = 0  # the samples themselves; the rest is the index (per series)

    @property
    def bytes_per_sample(self) -> float:
        return self.bytes / self.samples if self.samples else 0.0


def blocks(data: Path) -> Blocks:
    """Totals over the TSDB's blocks (promtool tsdb list; the stretch sits in one 2 h
    block range, so no series is counted in two blocks of one backfill)."""
    out = Blocks()
    for line in run("promtool", "tsdb", "list", str(data)).splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 8:
            out.samples += int(cols[4])
            out.series += int(cols[6])
            out.bytes += int(cols[7])
            out.chunk_bytes += sum(f.stat().st_size for f in (data / cols[0] / "chunks").iterdir())
    return out


# --- one fleet size --------------------------------------------------------------------------


@dataclass
class Result:
    nodes: int
    gpus: int
    raw: Blocks
    recorded: Blocks
    alive: int
    alive_recorded: int
    generate_s: float
    backfill_s: float
    rules_s: float
    panels: list[tuple[str, float, float, int, int]]  # where, raw s, recorded s, n raw, n rec
    alerts: list[tuple[str, float]]
    rule_eval: list[tuple[str, float]]
    # Alerts that read recorded series: name, inlined raw s, recorded names they read.
    alerts_inlined: list[tuple[str, float, list[str]]]


def measure(n: int, minutes: int, step: int, repeat: int, work: Path) -> Result:
    template = Template.load()
    nodes = plan(n)
    # The stretch sits inside one 2 h block range in the past, so that backfilled blocks
    # do not overlap the head and each series is in one block.
    now = time.time()
    start = (int(now - 4 * 3600) // 7200) * 7200 + 60
    end = start + minutes * 60
    data = work / f"data-{n}"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    t0 = time.perf_counter()
    gen_s = 0.0
    for i in range(0, n, CHUNK_NODES):
        chunk = work / "chunk.om"
        g0 = time.perf_counter()
        with chunk.open("w") as f:
            write(f, template, nodes[i : i + CHUNK_NODES], start, minutes * 60, step)
        gen_s += time.perf_counter() - g0
        run("promtool", "tsdb", "create-blocks-from", "openmetrics", str(chunk), str(data))
        chunk.unlink()
    backfill_s = time.perf_counter() - t0 - gen_s
    raw = blocks(data)

    recs, alerts = load_rules()
    t0 = time.perf_counter()
    for k, stage in enumerate(stages(recs)):
        rules = work / f"stage{k}.yml"
        rules.write_text(
            json.dumps(
                {
                    "groups": [
                        {"name": f"stage{k}", "rules": [{"record": a, "expr": b} for a, b in stage]}
                    ]
                }
            )
        )
        out = work / f"rules-{n}-{k}"
        shutil.rmtree(out, ignore_errors=True)
        with prometheus(data, work) as prom:
            run(
                "promtool", "tsdb", "create-blocks-from", "rules",
                f"--start={start}", f"--end={end}", f"--url={prom.url}",
                f"--output-dir={out}", f"--eval-interval={step}s", str(rules),
            )  # fmt: skip
        for block in out.iterdir():
            shutil.move(str(block), data / block.name)
        out.rmdir()
    rules_s = time.perf_counter() - t0
    recorded = Blocks()
    total = blocks(data)
    recorded.series = total.series - raw.series
    recorded.samples = total.samples - raw.samples
    recorded.bytes = total.bytes - raw.bytes
    recorded.chunk_bytes = total.chunk_bytes - raw.chunk_bytes

    rec_exprs = dict(recs)
    at = str(end)
    with prometheus(data, work) as prom:
        alive = int(
            prom.get("query", query='count({__name__=~"vigil_.+|process_.+"})', time=at)["result"][
                0
            ]["value"][1]
        )
        alive_rec = int(
            prom.get("query", query='count({__name__=~".+:.+:.+"})', time=at)["result"][0]["value"][
                1
            ]
        )
        rng = {"start": str(start + 300), "end": at, "step": str(step)}
        panels = []
        for where, expr in fleet_panels():
            raw_expr = inline(expr, rec_exprs)
            t_raw, n_raw = prom.timed(repeat, "query_range", query=raw_expr, **rng)
            t_rec, n_rec = prom.timed(repeat, "query_range", query=expr, **rng)
            panels.append((where, t_raw, t_rec, n_raw, n_rec))
        # Interleaved, the recorded and the inlined form of an alert see the same load.
        alert_times, inlined = [], []
        for a, e in alerts:
            alert_times.append((a, prom.timed(repeat, "query", query=e, time=at)[0]))
            reads = sorted({m.group(1) for m in _RECORDED.finditer(e)})
            if reads:
                t_raw = prom.timed(repeat, "query", query=inline(e, rec_exprs), time=at)[0]
                inlined.append((a, t_raw, reads))
        rule_times = [(r, prom.timed(repeat, "query", query=e, time=at)[0]) for r, e in recs]
    shutil.rmtree(data, ignore_errors=True)
    return Result(
        n,
        sum(x.gpus for x in nodes),
        raw,
        recorded,
        alive,
        alive_rec,
        gen_s,
        backfill_s,
        rules_s,
        panels,
        alert_times,
        rule_times,
        inlined,
    )


def report(r: Result, minutes: int, step: int) -> str:
    lines = [
        f"== N = {r.nodes} nodes ({r.gpus} GPUs), {minutes} min of {step} s scrapes",
        f"  raw TSDB:      {r.raw.series:>10,} series  {r.raw.samples:>12,} samples  "
        f"{r.raw.bytes / 2**20:8.1f} MiB  {r.raw.bytes_per_sample:5.2f} bytes/sample "
        f"({r.raw.chunk_bytes / max(r.raw.samples, 1):.2f} in chunks, index "
        f"{(r.raw.bytes - r.raw.chunk_bytes) / max(r.raw.series, 1):.0f} bytes/series)",
        f"  recorded:      {r.recorded.series:>10,} series  {r.recorded.samples:>12,} samples  "
        f"{r.recorded.bytes / 2**20:8.1f} MiB  ({r.recorded.series / max(r.raw.series, 1):.2%} "
        "of raw series)",
        f"  alive at end:  {r.alive:>10,} raw series ({r.alive / r.nodes:,.0f} per node), "
        f"{r.alive_recorded:,} recorded",
        f"  generate {r.generate_s:.0f} s, backfill {r.backfill_s:.0f} s, rules backfill "
        f"{r.rules_s:.0f} s",
        "  fleet panels, range query over the stretch (median):",
        f"    {'panel':62} {'raw ms':>9} {'rec ms':>9} {'ratio':>7}",
    ]
    for where, t_raw, t_rec, n_raw, n_rec in r.panels:
        flag = "" if n_raw == n_rec else f"  (series {n_raw} vs {n_rec})"
        lines.append(
            f"    {where[:62]:62} {t_raw * 1e3:9.1f} {t_rec * 1e3:9.1f} "
            f"{t_raw / max(t_rec, 1e-9):6.1f}x{flag}"
        )
    raw_sum = sum(p[1] for p in r.panels)
    rec_sum = sum(p[2] for p in r.panels)
    lines.append(
        f"    {'all fleet panels (one dashboard refresh)':62} {raw_sum * 1e3:9.1f} "
        f"{rec_sum * 1e3:9.1f} {raw_sum / max(rec_sum, 1e-9):6.1f}x"
    )
    lines.append("  one evaluation (instant query at the end), ms:")
    lines.append(
        "    alerts:  "
        + ", ".join(f"{a} {t * 1e3:.1f}" for a, t in sorted(r.alerts, key=lambda x: -x[1])[:6])
        + f"; all {len(r.alerts)}: {sum(t for _, t in r.alerts) * 1e3:.1f}"
    )
    lines.append(
        "    recording rules: "
        + ", ".join(f"{a} {t * 1e3:.1f}" for a, t in sorted(r.rule_eval, key=lambda x: -x[1])[:3])
        + f"; all {len(r.rule_eval)}: {sum(t for _, t in r.rule_eval) * 1e3:.1f}"
    )
    rule_s = dict(r.rule_eval)
    alert_s = dict(r.alerts)
    for a, t_raw, reads in r.alerts_inlined:
        t_rules = sum(rule_s[n] for n in reads)
        lines.append(
            f"    {a}: raw {t_raw * 1e3:.1f} -> recorded {alert_s[a] * 1e3:.1f} "
            f"+ its rules {t_rules * 1e3:.1f} = {(alert_s[a] + t_rules) * 1e3:.1f} "
            f"({t_raw / max(alert_s[a] + t_rules, 1e-9):.2f}x; reads {', '.join(reads)})"
        )
    if r.alerts_inlined:
        before = sum(alert_s.values()) + sum(t - alert_s[a] for a, t, _ in r.alerts_inlined)
        read = {n for _, _, reads in r.alerts_inlined for n in reads}
        after = sum(alert_s.values()) + sum(rule_s[n] for n in read)
        lines.append(
            f"    all alerts, raw -> recorded + the rules they read: {before * 1e3:.1f} -> "
            f"{after * 1e3:.1f} ({before / max(after, 1e-9):.2f}x)"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", default="100,300", help="comma-separated fleet sizes")
    ap.add_argument("--minutes", type=int, default=30)
    ap.add_argument("--step", type=int, default=30, help="scrape interval, seconds")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", default="", help="work directory (default: a temporary one)")
    args = ap.parse_args()
    for tool in ("prometheus", "promtool"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (apt-get install prometheus)", file=sys.stderr)
            return 2
    work = Path(args.work or tempfile.mkdtemp(prefix="vigil-fleet-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
        f"{run('prometheus', '--version').splitlines()[0]}"
    )
    first = plan(1)[0]
    print(f"template: {Template.load().series_per_node(first)} series on a {first.gpus}-GPU node")
    for n in (int(x) for x in args.nodes.split(",")):
        print(
            report(measure(n, args.minutes, args.step, args.repeat, work), args.minutes, args.step)
        )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
