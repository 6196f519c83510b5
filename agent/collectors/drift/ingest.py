"""HTTP routes of the drift API, mounted on the agent's server.

    POST /v1/drift/<model>/samples   JSON {"version", "rows": [{feature: value}]} or
                                     {"version", "columns": {feature: [values]}}, or NDJSON
                                     (Content-Type application/x-ndjson, ?version=V); a
                                     row holds the model's inputs and, next to them, its
                                     outputs (the columns its reference declares outputs);
                                     categorical values are strings
    GET  /v1/drift/<model>/check     run one check now (?version=V); JSON table
    GET  /v1/drift                   references, windows and the latest decisions

Answers: 200 all rows kept; 422 some rows dropped (the others were kept: do not resend
them), with the count per reason and the first few messages; 400 malformed body or a
value of the wrong kind for a reference with declared kinds (naming the column; nothing
kept), 401
no or wrong token, 404 unknown model or version, 408 body too slow, 413 body over the
limit (nothing kept), 429 too many batches at once (retry after Retry-After).
Every dropped sample counts in ``vigil_drift_rejected_samples_total{model,reason}``;
a body that cannot be read at all counts as one. Parsing runs in a worker thread so that
a large batch never stalls /metrics.

Authentication and the concurrency limit are the server's front (agent/server.py,
agent/auth.py): every route here needs ``Authorization: Bearer <token>``, checked before
the body is read.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from agent.collectors.drift.monitor import DriftMonitor, IngestError, Outcome
from agent.collectors.drift.parse import (
    MALFORMED,
    Parsed,
    ParseError,
    body_version,
    check_declarations,
    client_dropped,
    decode_json,
    parse_document,
    parse_ndjson,
)
from agent.collectors.drift.reference import CHI2, DriftResult
from agent.collectors.drift.store import NAME_RE
from agent.httpbody import read_body

log = logging.getLogger("vigil.drift.ingest")

NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines")
SAMPLES_ROUTE = "/v1/drift/{model}/samples"
# Batches parsed at once; the next ones get 429. Parsing is CPU-bound under the GIL, so a
# second batch only overlaps the first one's upload, and every further parser is one
# more thread a scrape must win the GIL from (bench/ingest_scrape: with 4, scrapes took
# up to 4 s under load on 2 cores; with 2, about 1 s). Each 8 MiB JSON batch costs
# ~100 MiB while parsed: 16 at once took 1.3 GiB before this limit.
INGEST_CONCURRENCY = 2


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


class DriftApi:
    def __init__(self, monitor: DriftMonitor, max_body: int) -> None:
        self.monitor, self.max_body = monitor, max_body

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(SAMPLES_ROUTE, self.samples),
            web.get("/v1/drift/{model}/check", self.check),
            web.get("/v1/drift", self.index),
        ]

    async def samples(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        if not NAME_RE.match(model):
            self.monitor.count_rejected(model, "unknown_model")
            return _error(404, f"{model[:60]!r} is not a valid model name")
        ndjson = request.content_type in NDJSON_TYPES
        try:
            # Whole-body reads for JSON and NDJSON alike: client_max_size bounds both, a
            # chunked body included, and read_body bounds the time (408 when too slow).
            raw = await read_body(request)
        except web.HTTPRequestEntityTooLarge:
            self.monitor.count_rejected(model, "too_large")
            return _error(413, self._too_large(request.content_length))
        loop = asyncio.get_running_loop()
        try:
            status, body = await loop.run_in_executor(
                None, self._ingest, model, raw, ndjson, request.query.get("version")
            )
        except IngestError as exc:
            self.monitor.count_rejected(model, exc.reason)
            return _error(exc.status, exc.message)
        except ParseError as exc:
            self.monitor.count_rejected(model, exc.reason)
            return _error(400, str(exc))
        return web.json_response(body, status=status)

    def _ingest(
        self, model: str, raw: bytes, ndjson: bool, qversion: str | None
    ) -> tuple[int, dict[str, Any]]:
        """Runs in a worker thread: parse, resolve the version, hand rows to the monitor."""
        dropped = 0
        if ndjson:
            version, features = self.monitor.resolve(model, qversion)
            parsed = parse_ndjson(raw.splitlines(), features, self.monitor.bounds)
        else:
            doc = decode_json(raw)
            wanted = body_version(doc) or qversion
            dropped = client_dropped(doc)
            version, features = self.monitor.resolve(model, wanted)
            check_declarations(doc, features)
            parsed = parse_document(doc, features, self.monitor.bounds)
        accepted = self.monitor.accept(model, version, parsed, dropped)
        return _answer(version, accepted, parsed)

    def _too_large(self, size: int | None) -> str:
        got = f"{size} bytes" if size else "larger"
        return (
            f"body is {got}, over the {self.max_body // (1024 * 1024)} MiB limit; nothing was "
            "kept: send smaller batches"
        )

    async def check(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        loop = asyncio.get_running_loop()
        try:
            try:
                version = self._tracked_version(model, request.query.get("version"))
            except IngestError:
                # A reference set a moment ago: load it now, as a sample for it would.
                if not await loop.run_in_executor(None, self.monitor.refresh_for, model):
                    raise
                version = self._tracked_version(model, request.query.get("version"))
            outcome = await loop.run_in_executor(None, self.monitor.check, model, version, True)
        except IngestError as exc:
            return _error(exc.status, exc.message)
        return web.json_response(outcome_json(outcome, self.monitor.settings.min_samples))

    def _tracked_version(self, model: str, version: str | None) -> str:
        versions = sorted(v for (m, v) in self.monitor.tracked() if m == model)
        if version is None and len(versions) == 1:
            return versions[0]
        if version is None and versions:
            raise IngestError(
                400,
                MALFORMED,
                f"model {model!r} has versions {', '.join(versions)}; add ?version=V",
            )
        if version in versions:
            return version
        raise IngestError(
            404,
            "unknown_model",
            f"no reference for model {model!r}" + (f" version {version!r}" if version else ""),
        )

    async def index(self, request: web.Request) -> web.Response:
        out = []
        for (model, version), t in sorted(self.monitor.tracked().items()):
            last = t.last
            out.append(
                {
                    "model": model,
                    "version": version,
                    "features": len(t.ref.feature_names),
                    "categorical": list(t.ref.schema.categorical),
                    "outputs": [
                        f for i, f in enumerate(t.ref.feature_names) if t.ref.schema.is_output(i)
                    ],
                    "reference_rows": t.ref.n,
                    "window_samples": len(t.window),
                    "samples_total": t.samples_total,
                    "detected": None
                    if last is None or last.result is None
                    else last.result.detected,
                    "output_detected": None
                    if last is None or last.result is None
                    else last.result.output_detected,
                }
            )
        return web.json_response({"references": out, "load_errors": self.monitor.load_errors})


def _answer(version: str, accepted: int, parsed: Parsed) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"version": version, "accepted": accepted}
    if not parsed.rejected:
        return 200, body
    body["rejected"] = dict(parsed.rejected)
    body["errors"] = parsed.errors
    body["error"] = (
        f"{sum(parsed.rejected.values())} row(s) dropped ({', '.join(sorted(parsed.rejected))}); "
        f"the other {accepted} were kept, do not resend them"
    )
    return 422, body


def outcome_json(outcome: Outcome, min_samples: int) -> dict[str, Any]:
    r = outcome.result
    doc: dict[str, Any] = {
        "model": outcome.model,
        "version": outcome.version,
        "window_samples": outcome.window_samples,
        "min_samples": min_samples,
        "decided": r is not None,
        "duration_seconds": round(outcome.duration_s, 6),
    }
    if r is None:
        return doc
    assert r.drifted is not None
    has_outputs = any(r.schema.is_output(i) for i in range(len(r.feature_names)))
    doc.update(
        detected=r.detected,
        output_detected=r.output_detected if has_outputs else None,
        alpha=r.alpha,
        correction=r.correction,
        method=r.method,
        reference_rows=r.n_reference,
        features=[feature_json(r, i) for i in range(len(r.feature_names))],
        top=[r.feature_names[i] for i in r.top()],
    )
    return doc


def feature_json(r: DriftResult, i: int) -> dict[str, Any]:
    """One feature of a check: test, numbers, decision, effect size and its shift."""
    assert r.drifted is not None
    shift = r.shifts[i]
    out: dict[str, Any] = {
        "feature": r.feature_names[i],
        "kind": r.schema.kinds[i],
        "role": r.schema.roles[i],
        "test": r.tests[i],
        "statistic": float(r.statistic[i]),
        "pvalue": float(r.pvalue[i]),
        "drifted": bool(r.drifted[i]),
        "effect": float(r.effect[i]),
        "shift": shift.describe(),
    }
    if shift.reference_quartiles is not None:
        out["reference_quartiles"] = list(shift.reference_quartiles)
        out["window_quartiles"] = list(shift.window_quartiles or ())
    if r.tests[i] == CHI2:
        out["unseen"] = shift.unseen
        out["categories"] = [
            {"category": c, "reference_share": rs, "window_share": ws}
            for c, rs, ws in shift.categories
        ]
    return out


def dumps(doc: Any) -> str:
    return json.dumps(doc, indent=2)
