#!/usr/bin/env bash
# The README's opening output, made again: a stand-in model server and a busy loop share
# one CPU, a real agent watches the server, and `vigil explain` says why it is slow.
#
#   sudo examples/explain-demo.sh          about 75 s: one diagnosis window and a round
#
# Needs root (the sched collector loads BPF programs) and .venv (scripts/setup.sh).
# AGENT_PORT (9475) must be free; CPU (0) is the one both processes are pinned to.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VIGIL="$ROOT/.venv/bin/vigil"
AGENT_PORT="${AGENT_PORT:-9475}"
CPU="${CPU:-0}"
DIR="$(mktemp -d /tmp/vigil-explain-demo.XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

cat > "$DIR/serve.py" <<'PY'
# A stand-in model server: tokenises and runs "batches" on the CPU, between short waits.
import time


def tokenize(text):
    return [hash(w) % 50000 for w in text.split()]


def forward(tokens):
    x = 0
    for t in tokens * 400:
        x = (x * 31 + t) % 1000003
    return x


def serve():
    text = "the quick brown fox jumps over the lazy dog " * 20
    while True:
        forward(tokenize(text))
        time.sleep(0.001)


serve()
PY

cd "$DIR"
taskset -c "$CPU" python3 serve.py & pids+=($!)
# The noisy neighbour: a busy loop on the same CPU.
taskset -c "$CPU" python3 -c 'while True: pass' & pids+=($!)
"$VIGIL" run --listen "127.0.0.1:$AGENT_PORT" --state-dir "$DIR/state" --no-collector.gpu \
    --watch 'serve\.py' > "$DIR/agent.log" 2>&1 & pids+=($!)

# The default diagnosis window is 60 s: ask once it is full and a round has run on it.
echo "explain-demo: waiting 70 s for one diagnosis window (agent log: $DIR/agent.log)" >&2
sleep 70
COLUMNS=88 "$VIGIL" explain --agent "http://127.0.0.1:$AGENT_PORT" --state-dir "$DIR/state"
