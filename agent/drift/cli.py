"""`vigil drift ...`: manage references and run a check now.

  vigil drift reference set --model M --version V FILE     CSV (header), .npy or .jsonl
  vigil drift reference set --model M --version V --bootstrap N
  vigil drift reference list | show --model M --version V | delete --model M --version V
  vigil drift check --model M [--version V]                 the agent's window, checked now
                                                           (token: <state-dir>/ingest-token)
  vigil drift check --model M --window-file FILE            a file, checked offline

References live under --state-dir (env VIGIL_STATE_DIR; default /var/lib/vigil as root,
./var otherwise), the directory `vigil run` reads: a running agent picks changes up at its
next check, without a restart, and a new reference or capture request with the very next
sample for it. Exit status: 0 done (check: no drift), 1 failed, 2 usage,
3 (check only) drift detected.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.collectors.drift import lengths
from agent.collectors.drift.ingest import outcome_json
from agent.collectors.drift.ks import CORRECTIONS, SampleError
from agent.collectors.drift.monitor import Outcome
from agent.collectors.drift.parse import ParseError, read_reference_file, read_typed_reference
from agent.collectors.drift.reference import Reference
from agent.collectors.drift.schema import UNSEEN_CODE, Schema, SchemaError
from agent.collectors.drift.settings import MAX_BOOTSTRAP_ROWS, DriftSettings
from agent.collectors.drift.store import (
    ReferenceStore,
    StoreError,
    atomic_write,
    check_features,
    check_name,
)
from agent.collectors.inference import kinds as inference_kinds
from agent.config import default_state_dir
from agent.drift.client import find_token
from agent.explain.client import default_agent_url

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_DRIFT = 0, 1, 2, 3
FORMATS = {".csv": "csv", ".npy": "npy", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class CliError(Exception):
    pass


class UsageError(CliError):
    """Bad arguments rather than a failed operation: exit status 2."""


def _name_arg(kind: str) -> Any:
    """An argparse type: bad model/version names are usage errors (exit 2), one line."""

    def parse(value: str) -> str:
        try:
            return check_name(kind, value)
        except StoreError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _alpha_arg(value: str) -> float:
    try:
        alpha = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    # float() accepts "nan" and "inf"; neither is a significance level.
    if not (math.isfinite(alpha) and 0.0 < alpha < 1.0):
        raise argparse.ArgumentTypeError(f"{value!r} is not a probability strictly between 0 and 1")
    return alpha


def _bootstrap_arg(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not 1 <= n <= MAX_BOOTSTRAP_ROWS:
        raise argparse.ArgumentTypeError(f"N must be between 1 and {MAX_BOOTSTRAP_ROWS:,}")
    return n


def _store(ns: argparse.Namespace) -> ReferenceStore:
    return ReferenceStore(
        Path(ns.state_dir or os.environ.get("VIGIL_STATE_DIR") or default_state_dir())
    )


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="state directory (env VIGIL_STATE_DIR; default /var/lib/vigil as root, "
        "./var otherwise)",
    )


def _model_version(p: argparse.ArgumentParser, version_required: bool = True) -> None:
    p.add_argument("--model", required=True, metavar="M", type=_name_arg("model"))
    p.add_argument(
        "--version",
        required=version_required,
        metavar="V",
        dest="model_version",
        type=_name_arg("version"),
    )


def register(sub: Any) -> None:
    drift = sub.add_parser(
        "drift",
        help="input-drift references and checks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dsub = drift.add_subparsers(dest="drift_command", metavar="COMMAND")
    drift.set_defaults(func=lambda ns, specs: _help(drift))

    ref = dsub.add_parser("reference", help="set, list, show or delete references")
    rsub = ref.add_subparsers(dest="reference_command", metavar="ACTION")
    ref.set_defaults(func=lambda ns, specs: _help(ref))

    s = rsub.add_parser("set", help="store a reference from a file, or capture the next N samples")
    _model_version(s)
    s.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help="CSV with a header, .npy (rows x features) or JSON lines",
    )
    s.add_argument(
        "--bootstrap",
        type=_bootstrap_arg,
        metavar="N",
        help=f"capture the first N live samples instead of a file (N <= {MAX_BOOTSTRAP_ROWS:,})",
    )
    s.add_argument(
        "--format",
        choices=sorted(set(FORMATS.values())),
        help="file format (default: from the extension)",
    )
    s.add_argument(
        "--features",
        metavar="A,B,...",
        help="feature names for a .npy file (default feature_0, feature_1, ...)",
    )
    s.add_argument(
        "--categorical",
        metavar="COL,...",
        default="",
        help="columns holding categories (strings), tested with chi-squared (CSV or JSON lines)",
    )
    s.add_argument(
        "--output",
        metavar="COL,...",
        default="",
        help="columns that are the model's outputs (predicted labels, scores): decided apart "
        "from the inputs, in vigil_drift_output_detected",
    )
    s.add_argument(
        "--confidence",
        metavar="COL,...",
        default="",
        help="output columns holding confidence scores in [0, 1]; also counted in the "
        "vigil_prediction_confidence histogram",
    )
    _common(s)
    s.set_defaults(func=_run(cmd_set))

    ls = rsub.add_parser("list", help="list stored references")
    _common(ls)
    ls.set_defaults(func=_run(cmd_list))

    sh = rsub.add_parser("show", help="verify a reference and summarise each feature")
    _model_version(sh)
    _common(sh)
    sh.set_defaults(func=_run(cmd_show))

    de = rsub.add_parser("delete", help="delete a reference")
    _model_version(de)
    _common(de)
    de.set_defaults(func=_run(cmd_delete))

    ln = dsub.add_parser(
        "lengths", help="the reference period of an LLM server's prompt and generation lengths"
    )
    lsub = ln.add_subparsers(dest="lengths_command", metavar="ACTION")
    ln.set_defaults(func=lambda ns, specs: _help(ln))
    ls_set = lsub.add_parser(
        "set",
        help="store the requests between two saved /metrics pages of a vLLM or SGLang "
        "server as the length reference of a model",
    )
    ls_set.add_argument("--model", required=True, metavar="M", help="the model as served")
    ls_set.add_argument("--kind", required=True, choices=("vllm", "sglang"), help="the server kind")
    ls_set.add_argument(
        "--before",
        metavar="FILE",
        help="the /metrics page at the start of the period (default: the server's start)",
    )
    ls_set.add_argument("after", metavar="FILE", help="the /metrics page at the end of the period")
    _common(ls_set)
    ls_set.set_defaults(func=_run(cmd_lengths_set))
    ls_del = lsub.add_parser(
        "delete", help="forget a stored length reference (the agent captures one again)"
    )
    ls_del.add_argument("--model", required=True, metavar="M")
    _common(ls_del)
    ls_del.set_defaults(func=_run(cmd_lengths_delete))

    ck = dsub.add_parser(
        "check", help="run one check now and print a table (feature, D, p, drifted)"
    )
    _model_version(ck, version_required=False)
    ck.add_argument(
        "--agent",
        metavar="URL",
        default=default_agent_url(),
        help="the running agent (default from VIGIL_LISTEN, else %(default)s)",
    )
    ck.add_argument(
        "--token-file",
        metavar="FILE",
        help="the agent's API token (default: env VIGIL_INGEST_TOKEN, VIGIL_INGEST_TOKEN_FILE, "
        "else <state-dir>/ingest-token, which the agent generates)",
    )
    ck.add_argument(
        "--window-file",
        metavar="FILE",
        help="check this file against the stored reference instead of asking the agent",
    )
    ck.add_argument(
        "--alpha",
        type=_alpha_arg,
        default=DriftSettings.alpha,
        help="with --window-file, in (0, 1) (default %(default)s)",
    )
    ck.add_argument(
        "--correction",
        choices=CORRECTIONS,
        default=DriftSettings.correction,
        help="with --window-file",
    )
    ck.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _common(ck)
    ck.set_defaults(func=_run(cmd_check))


def _help(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return EXIT_USAGE


def _run(fn: Any) -> Any:
    def wrapped(ns: argparse.Namespace, specs: Any) -> int:
        try:
            return int(fn(ns))
        except UsageError as exc:
            print(f"vigil drift: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except (CliError, StoreError, ParseError, SampleError, SchemaError) as exc:
            print(f"vigil drift: {exc}", file=sys.stderr)
            return EXIT_FAIL

    return wrapped


def _columns(text: str) -> list[str]:
    """A comma-separated column list, each name once (``a,a`` declares one column)."""
    return list(dict.fromkeys(c.strip() for c in text.split(",") if c.strip()))


def _read_typed(
    path: str, fmt: str | None, features: str | None, categorical: list[str]
) -> tuple[tuple[str, ...], np.ndarray, dict[str, tuple[str, ...]]]:
    fmt = fmt or FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise CliError(f"cannot tell the format of {path}: use a .csv or .jsonl name, or --format")
    if fmt == "npy":
        # An array holds numbers only: it has no strings to be categories of.
        raise UsageError(
            f"{path} is npy, which holds numbers only: categorical columns "
            f"({', '.join(categorical)}) need a CSV or JSON lines file"
        )
    if features:
        raise UsageError(
            f"--features applies only to .npy files; {path} is {fmt}, which names its own features"
        )
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return read_typed_reference(data, fmt, categorical)
    except ParseError as exc:
        raise CliError(f"{path}: {exc}") from None


def _read_window_typed(path: str, schema: Schema) -> tuple[tuple[str, ...], np.ndarray]:
    """A window file for a reference with categorical columns, coded as the reference."""
    names, values, cats = _read_typed(path, None, None, list(schema.categorical))
    for name, window_cats in cats.items():
        j = names.index(name)
        index = {c: i for i, c in enumerate(schema.categories[name])}
        recode = np.array([index.get(c, UNSEEN_CODE) for c in window_cats])
        values[:, j] = recode[values[:, j].astype(np.int64)]
    return names, values


def _read_file(
    path: str, fmt: str | None, features: str | None
) -> tuple[tuple[str, ...], np.ndarray]:
    fmt = fmt or FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise CliError(
            f"cannot tell the format of {path}: use a .csv, .npy or .jsonl name, or --format"
        )
    if features and fmt != "npy":
        # CSV and JSON lines name their own features; ignoring --features silently would
        # store names the user did not ask for.
        raise UsageError(
            f"--features applies only to .npy files; {path} is {fmt}, which names its own features"
        )
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    names = [f.strip() for f in features.split(",")] if features else None
    try:
        return read_reference_file(data, fmt, names)
    except ParseError as exc:
        raise CliError(f"{path}: {exc}") from None


def cmd_set(ns: argparse.Namespace) -> int:
    store = _store(ns)
    model, version = check_name("model", ns.model), check_name("version", ns.model_version)
    if (ns.file is None) == (ns.bootstrap is None):
        raise UsageError("give either FILE or --bootstrap N")
    categorical, outputs, confidence = (
        _columns(ns.categorical),
        _columns(ns.output),
        _columns(ns.confidence),
    )
    if ns.bootstrap is not None:
        if ns.features or ns.format:
            raise UsageError("--features and --format apply to FILE, not to --bootstrap")
        both = sorted(set(categorical) & set(confidence))
        if both:
            raise UsageError(f"column {both[0]!r} cannot be both categorical and a confidence")
        declared = {"categorical": categorical, "outputs": outputs, "confidence": confidence}
        path = store.request_bootstrap(model, version, ns.bootstrap, declared)
        print(
            f"the agent will capture the first {ns.bootstrap} samples of {model} {version} "
            f"as its reference ({path})"
        )
        return EXIT_OK
    if categorical:
        names, values, cats = _read_typed(ns.file, ns.format, ns.features, categorical)
    else:
        (names, values), cats = _read_file(ns.file, ns.format, ns.features), {}
    check_features(names)
    schema = Schema.declare(names, categorical, outputs, confidence, cats)
    schema.check_confidence(values)
    sample = Reference.from_rows(values, schema)
    path = store.save(model, version, sample, f"file: {Path(ns.file).resolve()}")
    n_categorical = len(schema.categorical)
    kinds = f" ({n_categorical} categorical)" if n_categorical else ""
    print(
        f"stored reference {model} {version}: {sample.n} rows x {sample.n_features} "
        f"features{kinds} in {path}; a running agent with this --state-dir uses it from the "
        "next sample"
    )
    return EXIT_OK


def _length_counts(path: str, kind: str, model: str) -> dict[str, lengths.Counts]:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    try:
        stats, _ = inference_kinds.parse(kind, text, max_models=1_000)
    except inference_kinds.ParseError as exc:
        raise CliError(f"{path}: {exc}") from None
    st = stats.get(model)
    if st is None:
        raise CliError(
            f"{path} has no series of model {model!r} (models: {', '.join(sorted(stats)) or '-'})"
        )
    out = {}
    for name, hist in (("prompt", st.prompt_tokens), ("generation", st.generation_tokens)):
        if hist is not None and len(hist.buckets) >= 2:
            out[name] = lengths.Counts.from_cumulative(hist.buckets)
    if not out:
        raise CliError(f"{path}: model {model!r} has no prompt or generation length histogram")
    return out


def cmd_lengths_set(ns: argparse.Namespace) -> int:
    after = _length_counts(ns.after, ns.kind, ns.model)
    before = _length_counts(ns.before, ns.kind, ns.model) if ns.before else {}
    refs = {}
    for name, counts in after.items():
        try:
            refs[name] = lengths.reference_between(before.get(name), counts)
        except ValueError as exc:
            raise CliError(f"{name} lengths: {exc}") from None
    if not any(c.total > 0 for c in refs.values()):
        raise CliError("no request finished between the two pages: nothing to compare with")
    path = lengths.reference_path(_store(ns).root.parent, ns.model)
    source = f"file: {Path(ns.before).resolve() if ns.before else 'server start'} .. " + str(
        Path(ns.after).resolve()
    )
    atomic_write(path, lengths.write_reference(refs, source))
    summary = ", ".join(f"{k} {int(c.total)} requests" for k, c in refs.items())
    print(f"stored the length reference of {ns.model} ({summary}) in {path}")
    return EXIT_OK


def cmd_lengths_delete(ns: argparse.Namespace) -> int:
    path = lengths.reference_path(_store(ns).root.parent, ns.model)
    try:
        path.unlink()
    except FileNotFoundError:
        raise CliError(f"no length reference for {ns.model!r} at {path}") from None
    except OSError as exc:
        raise CliError(f"cannot delete {path}: {exc.strerror}") from None
    print(f"deleted the length reference of {ns.model}; the agent captures a new one")
    return EXIT_OK


def cmd_list(ns: argparse.Namespace) -> int:
    store = _store(ns)
    rows = []
    failed = False
    for model, version, path, _ in store.files():
        try:
            info = store.read_info(path)
            rows.append(
                (model, version, str(info.rows), str(len(info.features)), info.created, info.source)
            )
        except StoreError as exc:
            rows.append((model, version, "-", "-", "CORRUPT", str(exc)))
            failed = True
    for req in store.bootstrap_requests():
        # The count captured so far lives in the agent's memory only; show the target.
        rows.append((req.model, req.version, f"target {req.rows}", "-", "capturing", "bootstrap"))
    if not rows:
        print(f"no references under {store.refs}")
        return EXIT_OK
    _table(("MODEL", "VERSION", "ROWS", "FEATURES", "CREATED", "SOURCE"), rows)
    return EXIT_FAIL if failed else EXIT_OK


def cmd_show(ns: argparse.Namespace) -> int:
    info, ref = _store(ns).load(
        check_name("model", ns.model), check_name("version", ns.model_version)
    )
    print(
        f"model {info.model}  version {info.version}  rows {info.rows}  "
        f"features {len(info.features)}"
    )
    print(f"created {info.created}  source {info.source}  file {info.path}  checksum ok")
    v = ref.sorted_values
    mid = np.median(v, axis=1)  # v[n // 2] is wrong for even n
    schema = ref.schema
    rows = []
    for i, f in enumerate(info.features):
        if f in schema.categories:
            cats = schema.categories[f]
            codes, counts = np.unique(v[i], return_counts=True)
            top = cats[int(codes[int(np.argmax(counts))])]
            summary = (f"{len(cats)} categories", f"most: {top}", "")
        else:
            summary = (f"{v[i, 0]:.6g}", f"{mid[i]:.6g}", f"{v[i, -1]:.6g}")
        rows.append((f, schema.kinds[i], schema.roles[i], *summary))
    _table(("FEATURE", "KIND", "ROLE", "MIN", "MEDIAN", "MAX"), rows)
    return EXIT_OK


def cmd_delete(ns: argparse.Namespace) -> int:
    store = _store(ns)
    model, version = check_name("model", ns.model), check_name("version", ns.model_version)
    store.cancel_bootstrap(model, version)
    if not store.delete(model, version):
        raise CliError(f"no reference for model {model} version {version} under {store.refs}")
    print(f"deleted reference {model} {version}")
    return EXIT_OK


def cmd_check(ns: argparse.Namespace) -> int:
    doc = _check_file(ns) if ns.window_file else _check_agent(ns)
    if ns.json:
        print(json.dumps(doc, indent=2))
    else:
        _print_check(doc)
    return EXIT_DRIFT if doc.get("detected") or doc.get("output_detected") else EXIT_OK


def _check_file(ns: argparse.Namespace) -> dict[str, Any]:
    store = _store(ns)
    model = check_name("model", ns.model)
    version = ns.model_version
    if version is None:
        versions = [v for m, v, _, _ in store.files() if m == model]
        if len(versions) != 1:
            raise CliError(
                f"model {model} has {len(versions)} reference versions; say which with --version"
            )
        version = versions[0]
    _info, ref = store.load(model, check_name("version", version))
    if ref.schema.categorical:
        names, values = _read_window_typed(ns.window_file, ref.schema)
    else:
        names, values = _read_file(ns.window_file, None, None)
    if ref.feature_names != names:
        index = {n: i for i, n in enumerate(names)}
        missing = [f for f in ref.feature_names if f not in index]
        if missing:
            raise CliError(
                f"{ns.window_file} lacks feature(s) {', '.join(missing[:5])} of the reference"
            )
        values = values[:, [index[f] for f in ref.feature_names]]
    result = ref.test(values, alpha=ns.alpha, correction=ns.correction)
    return outcome_json(Outcome(model, version, len(values), result, 0.0, 0.0), 1)


def _check_agent(ns: argparse.Namespace) -> dict[str, Any]:
    agent = urllib.parse.urlsplit(ns.agent)
    if agent.scheme not in ("http", "https") or not agent.netloc:
        raise UsageError(f"--agent {ns.agent!r} must be an http:// or https:// URL")
    # Names were checked by argparse; quoting still guards the URL against any character
    # the name alphabet may grow to include.
    url = f"{ns.agent.rstrip('/')}/v1/drift/{urllib.parse.quote(ns.model, safe='')}/check"
    if ns.model_version:
        url += "?" + urllib.parse.urlencode({"version": ns.model_version})
    # The agent generated its token into the state directory on first start: read it
    # from there unless told otherwise (--token-file, VIGIL_INGEST_TOKEN[_FILE]).
    state_dir = ns.state_dir or os.environ.get("VIGIL_STATE_DIR") or default_state_dir()
    auth = find_token(token_file=ns.token_file, state_dirs=[state_dir])
    if ns.token_file and auth.token is None:
        raise CliError(f"--token-file: {auth.tried[-1]}")
    headers = {"Authorization": f"Bearer {auth.token}"} if auth.token is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as r:
            return dict(json.loads(r.read()))
    except urllib.error.HTTPError as exc:
        try:
            why = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            why = exc.reason
        if exc.code == 401:
            why = f"{why} ({auth.explain()})"
        raise CliError(f"agent at {ns.agent} answered {exc.code}: {why}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(
            f"cannot reach the agent at {ns.agent} ({reason}); is `vigil run` running? "
            "(or use --window-file FILE)"
        ) from None


def _print_check(doc: dict[str, Any]) -> None:
    head = f"model {doc['model']}  version {doc['version']}  window {doc['window_samples']} samples"
    if not doc.get("decided"):
        print(f"{head}: too few samples to decide (at least {doc.get('min_samples')} needed)")
        return
    print(f"{head}  alpha {doc['alpha']} ({doc['correction']})  method {doc['method']}")
    _table(
        ("FEATURE", "ROLE", "TEST", "STATISTIC", "P", "EFFECT", "DRIFTED", "SHIFT"),
        [
            (
                f["feature"],
                f.get("role", "input"),
                f.get("test", "ks"),
                f"{f['statistic']:.4g}",
                f"{f['pvalue']:.3g}",
                f"{f['effect']:.3f}" if "effect" in f else "-",
                "yes" if f["drifted"] else "no",
                f.get("shift", ""),
            )
            for f in doc["features"]
        ],
    )
    print("input drift detected" if doc["detected"] else "no input drift")
    if doc.get("output_detected") is not None:
        print("output drift detected" if doc["output_detected"] else "no output drift")
    print(
        "EFFECT: numeric, Wasserstein distance / reference IQR; categorical, Jensen-Shannon "
        "distance (0-1). SHIFT: window minus reference (pp: percentage points)."
    )


def _table(head: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
