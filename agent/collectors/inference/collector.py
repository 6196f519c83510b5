"""The inference collector: one round per interval finds the targets, probes each (a
small thread pool, so hung servers cannot hold up the others), reads and normalises its
/metrics, and publishes a frozen snapshot that scrapes render. Nothing here runs in a
scrape."""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from prometheus_client.core import Metric

from agent.collectors.drift.lengths import LengthDrift
from agent.collectors.inference import kinds, probe
from agent.collectors.inference.render import render
from agent.collectors.inference.settings import InferenceSettings
from agent.collectors.inference.state import Snapshot, TargetState
from agent.collectors.inference.targets import (
    SOURCES,
    ProcReader,
    Target,
    discovered,
    parse_annotations,
    parse_static_target,
    plan,
)
from agent.discovery import Discovery, series_labels
from agent.log import log_limited
from agent.registry import Context, SnapshotCollector

log = logging.getLogger("vigil.inference")

# A health answer is a status and a few bytes; more than this is not a health endpoint.
HEALTH_MAX_BYTES = 64 * 1024
# A confirmed target whose process stopped listening (killed, exited) is probed this much
# longer, so that it shows up as down (refused) long enough for the consecutive-failure
# rule and a 60 s Prometheus scrape to see it, instead of just vanishing.
GONE_GRACE_S = 120.0
# A port that is not (yet) an inference server is retried after interval x 2^misses, at
# most this often: a gRPC or NCCL port costs one timeout every 5 minutes, not every round.
CANDIDATE_BACKOFF_MAX_S = 300.0
# OIP deep checks are one request per model: at most this many per target and round.
MAX_DEEP_MODELS = 8
SCRAPE_ERROR_LOG_EVERY_S = 300.0
METRICS_PATH = "/metrics"


def metric_names(text: str) -> set[str]:
    """Family and sample names in a text exposition, cheaply (pure): enough to tell a
    server's kind without parsing values."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE ") or line.startswith("# HELP "):
            parts = line.split(None, 3)
            if len(parts) >= 3:
                names.add(parts[2])
        elif line and not line.startswith("#"):
            end = min((i for i in (line.find("{"), line.find(" ")) if i > 0), default=-1)
            if end > 0:
                names.add(line[:end])
    return names


class InferenceCollector(SnapshotCollector):
    name = "inference"

    def __init__(
        self,
        discovery: Discovery,
        settings: InferenceSettings,
        procfs: str,
        clock: Callable[[], float] = time.monotonic,
        lengths: LengthDrift | None = None,
    ) -> None:
        super().__init__(settings.interval)
        # Prompt/generation length drift of LLM servers, fed from the scrapes below.
        self.lengths = lengths if lengths is not None else LengthDrift(None)
        self.discovery = discovery
        self.settings = settings
        self.reader = ProcReader(procfs)
        self._now = clock
        self.static = [parse_static_target(t) for t in settings.targets]
        self.states: dict[tuple[str, int], TargetState] = {}
        self._pool: ThreadPoolExecutor | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def open(self) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=self.settings.workers, thread_name_prefix="vigil-inference-probe"
        )

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def render(self, snapshot: Snapshot) -> Iterable[Metric]:
        return [*render(snapshot), *self.lengths.render()]

    # -- a round ----------------------------------------------------------------------------
    def refresh(self) -> Snapshot:
        now = self._now()
        candidates, unreachable = self._candidates()
        targets, dropped = plan(candidates, self.settings.max_targets)
        dropped["no_address"] = unreachable
        self._sync(targets, now)
        due = [s for s in self.states.values() if s.confirmed or s.retry_at <= now]
        if self._pool is None:
            self.open()
        assert self._pool is not None
        # Every request inside a task has its own deadline, so the wait is bounded by them.
        wait([self._pool.submit(self._probe_target, s) for s in due])
        live = [s for s in self.states.values() if s.confirmed]
        self.lengths.forget((*s.target.labels, str(s.target.port), s.kind) for s in live)
        by_source = {src: 0 for src in SOURCES}
        for s in live:
            by_source[s.target.source] += 1
        return Snapshot(
            targets=tuple(s.view() for s in sorted(live, key=lambda s: s.target.key)),
            by_source=tuple(by_source.items()),
            dropped=tuple(sorted(dropped.items())),
        )

    def _pods(self) -> Mapping[str, Any]:
        pods = getattr(self.discovery.resolver, "pods", None)
        return pods() if callable(pods) else {}

    def _candidates(self) -> tuple[list[Target], int]:
        # A configured target names no process: its host stands in for comm, so that two
        # hosts serving on the same port stay two series.
        out = [
            Target(
                s.host, s.port, "config", ("", "", "", s.host, ""), s.kind, s.base_path, "", s.model
            )
            for s in self.static
        ]
        pods = self._pods()
        watched = self.discovery.snapshot()
        labels_of_pod = {p.pod_uid: series_labels(p, p.pid) for p in watched.values() if p.pod_uid}
        for uid, pod in sorted(pods.items()):
            ip = getattr(pod, "ip", "")
            found = parse_annotations(
                getattr(pod, "annotations", {}) or {}, self.settings.annotation_prefix
            )
            if found is None or not ip:
                continue
            if isinstance(found, str):
                log_limited(
                    log,
                    logging.WARNING,
                    f"annotation:{uid}",
                    "pod annotation ignored",
                    pod=getattr(pod, "name", ""),
                    namespace=getattr(pod, "namespace", ""),
                    error=found,
                    every=SCRAPE_ERROR_LOG_EVERY_S,
                )
                continue
            labels = labels_of_pod.get(
                uid, (getattr(pod, "name", ""), getattr(pod, "namespace", ""), "", "", "")
            )
            out.append(
                Target(ip, found.port, "annotation", labels, found.kind, "", found.metrics_path)
            )
        procs = [
            (p.pid, p.cmdline, series_labels(p, p.pid), p.pod_uid)
            for p in sorted(watched.values(), key=lambda p: p.pid)
        ]

        def pod_ip(uid: str) -> str:
            return str(getattr(pods.get(uid), "ip", "") or "")

        found_targets, unreachable = discovered(
            procs, self.reader, kinds.kind_from_cmdline, pod_ip, self.settings.node_address
        )
        # Ports already known to be servers first, so that a process's many other ports
        # (NCCL, ZMQ) never push a real server over the target cap.
        found_targets.sort(
            key=lambda t: not (t.key in self.states and self.states[t.key].confirmed)
        )
        out.extend(found_targets)
        return out, unreachable

    def _sync(self, targets: list[Target], now: float) -> None:
        planned = {t.key for t in targets}
        for t in targets:
            state = self.states.get(t.key)
            if state is None:
                self.states[t.key] = TargetState(
                    t, t.kind, confirmed=t.source != "discovered", last_seen=now
                )
                continue
            # Same address and port, maybe a new process (a restart): keep the totals.
            if t.kind and t.kind != state.target.kind and t.source != "discovered":
                state.kind = t.kind
            state.target = t
            state.last_seen = now
        for key, state in list(self.states.items()):
            if key in planned:
                continue
            if not state.confirmed or now - state.last_seen > GONE_GRACE_S:
                del self.states[key]
        # Lingering targets count against the cap as well.
        over = len(self.states) - self.settings.max_targets
        if over > 0:
            gone = sorted((s.last_seen, k) for k, s in self.states.items() if k not in planned)
            for _, key in gone[:over]:
                del self.states[key]

    # -- one target (in a pool thread; touches only its own state) -----------------------------
    def _probe_target(self, state: TargetState) -> None:
        try:
            self._probe(state)
        except Exception as exc:  # a bug must cost one target one round, not the round
            log_limited(
                log,
                logging.ERROR,
                f"probe-bug:{type(exc).__name__}",
                "inference probe failed unexpectedly",
                exc_info=True,
                error=str(exc),
                every=60.0,
            )

    def _url(self, state: TargetState, path: str) -> str:
        return state.target.base_path + path

    def _probe(self, state: TargetState) -> None:
        s = self.settings
        t = state.target
        info = kinds.INFO.get(state.kind)
        health: tuple[bool, float, str, int] | None = None
        if info is not None:
            started = self._now()
            try:
                probe.get_ok(
                    t.host, t.port, self._url(state, info.health_path), s.timeout, HEALTH_MAX_BYTES
                )
                health = (True, self._now() - started, "", 200)
            except probe.ProbeFailure as exc:
                elapsed = self._now() - started
                # A timeout is recorded at the timeout, not at the moment the thread woke.
                seconds = s.timeout if exc.reason == "timeout" else elapsed
                health = (False, seconds, exc.reason, exc.status)
        scraped = self._scrape(state, info)
        if not state.confirmed:
            if (health is not None and health[0]) or scraped:
                state.confirmed = True
                log.info(
                    "inference server found",
                    extra={"host": t.host, "port": t.port, "kind": state.kind, "pid": t.pid},
                )
            else:
                state.misses += 1
                backoff = min(s.interval * 2**state.misses, CANDIDATE_BACKOFF_MAX_S)
                state.retry_at = self._now() + backoff
                return
        if health is not None:
            state.record_probe(*health)
        if s.deep_probe and info is not None:
            self._deep(state, info)

    def _scrape(self, state: TargetState, info: kinds.KindInfo | None) -> bool:
        s = self.settings
        t = state.target
        path = t.metrics_path or (info.metrics_path if info is not None else METRICS_PATH)
        try:
            resp = probe.get_ok(
                t.host, t.port, self._url(state, path), s.scrape_timeout, s.max_body_bytes
            )
            text = resp.body.decode("utf-8", "replace")
            if not state.kind_checked:
                # The exposition has the last word on the kind: a command line can mislead
                # (a wrapper script, a renamed binary).
                told = kinds.kind_from_metric_names(metric_names(text))
                if told is not None and told != state.kind:
                    if state.kind:
                        log.info(
                            "server kind corrected from its metrics",
                            extra={"host": t.host, "port": t.port, "was": state.kind, "kind": told},
                        )
                    state.kind = told
                if state.kind:
                    state.kind_checked = True
            if state.kind not in kinds.INFO:
                raise probe.ProbeFailure(
                    "unknown_kind", "the metric names match no known server kind"
                )
            stats, dropped = kinds.parse(state.kind, text, s.max_models)
        except probe.ProbeFailure as exc:
            self._scrape_failed(state, exc.reason, exc.detail, exc.status)
            return False
        except kinds.ParseError as exc:
            self._scrape_failed(state, "parse", str(exc))
            return False
        except Exception as exc:  # a parser bug: no numbers this round rather than old ones
            self._scrape_failed(state, "error", f"{type(exc).__name__}: {exc}")
            return False
        now = self._now()
        state.record_stats(stats, dropped, now, s.stall_after)
        key = (*t.labels, str(t.port), state.kind)
        for model, st in stats.items():
            for length, hist in (
                ("prompt", st.prompt_tokens),
                ("generation", st.generation_tokens),
            ):
                if hist is not None:
                    self.lengths.observe(key, model, length, hist.buckets, now)
        return True

    def _scrape_failed(self, state: TargetState, reason: str, detail: str, status: int = 0) -> None:
        if not state.confirmed:
            return  # a candidate port: silence until it proves to be a server
        state.record_scrape_error(reason, status)
        if state.health_only:
            return  # an API port whose metrics live on another port: nothing to say
        t = state.target
        log_limited(
            log,
            logging.WARNING,
            f"scrape:{t.host}:{t.port}:{reason}",
            "inference server metrics unreadable",
            host=t.host,
            port=t.port,
            kind=state.kind,
            reason=reason,
            error=detail[:300],
            every=SCRAPE_ERROR_LOG_EVERY_S,
        )

    def _deep(self, state: TargetState, info: kinds.KindInfo) -> None:
        t = state.target
        if info.deep_path is not None:
            state.deep_up = self._ok(t, self._url(state, info.deep_path))
        # Per-model readiness (OIP v2, Triton): "/v2/models/{model}/ready".
        ready = getattr(info, "model_ready_path", None)
        if ready and state.stats:
            deep: dict[str, bool] = {}
            for model in sorted(state.stats)[:MAX_DEEP_MODELS]:
                if model:
                    path = ready.format(model=urllib.parse.quote(model, safe=""))
                    deep[model] = self._ok(t, self._url(state, path))
            state.deep_models = deep

    def _ok(self, t: Target, path: str) -> bool:
        try:
            probe.get_ok(t.host, t.port, path, self.settings.scrape_timeout, HEALTH_MAX_BYTES)
            return True
        except probe.ProbeFailure:
            return False


def factory(ctx: Context, settings: InferenceSettings) -> InferenceCollector:
    return InferenceCollector(
        ctx.discovery, settings, ctx.paths.procfs, lengths=LengthDrift(ctx.paths.state_dir)
    )
