#!/usr/bin/env bash
# Watch a rollback happen, on one machine, with the real parts:
#
#   demo model server ──inputs──▶ vigil run ──▶ Prometheus ──▶ Alertmanager
#        ▲                                                        │
#        └──── current -> v2 ◀── vigil rollback-controller ◀──────┘
#
#   examples/rollback-demo.sh            run until Ctrl-C (logs in $DEMO_DIR)
#   examples/rollback-demo.sh --once     exit after the rollback (and say how long it took)
#
# Needs prometheus and prometheus-alertmanager (scripts/setup.sh installs them) and .venv.
# Ports: AGENT_PORT (9475), CONTROLLER_PORT (9476), AM_PORT (9093), PROM_PORT (9090),
# MODEL_PORT (8080); a taken one stops the demo at once, naming it. Each readiness check
# counts only an answer from the process the demo started (examples/ports.py owns).
# Timings are the demo's: 1s scrape and evaluation, `for: 5s`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
VIGIL="$ROOT/.venv/bin/vigil"
DEMO_DIR="${DEMO_DIR:-$(mktemp -d /tmp/vigil-demo.XXXXXX)}"
AGENT_PORT="${AGENT_PORT:-9475}" CONTROLLER_PORT="${CONTROLLER_PORT:-9476}"
AM_PORT="${AM_PORT:-9093}" PROM_PORT="${PROM_PORT:-9090}" MODEL_PORT="${MODEL_PORT:-8080}"
ONCE=0; [ "${1:-}" = "--once" ] && ONCE=1

# Before anything starts: a server that cannot listen would only say so in its log, and a
# readiness check would reach whatever holds the port.
if ! taken=$("$PY" "$ROOT/examples/ports.py" free AGENT_PORT="$AGENT_PORT" \
        CONTROLLER_PORT="$CONTROLLER_PORT" AM_PORT="$AM_PORT" PROM_PORT="$PROM_PORT" \
        MODEL_PORT="$MODEL_PORT" 2>&1); then
    sed 's/^/demo: /' <<<"$taken" >&2; exit 1
fi

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
say() { printf '%s demo: %s\n' "$(date +%T)" "$*"; }
# wait_http NAME PID PORT PATH: until process PID answers on PORT, which must be its own.
wait_http() {
    local name="$1" pid="$2" port="$3" url="http://127.0.0.1:$3$4"
    for _ in $(seq 200); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "demo: $name exited before answering on port $port; see $DEMO_DIR/$name.log" >&2; exit 1
        fi
        if curl -sf -m 2 -o /dev/null "$url"; then
            "$PY" "$ROOT/examples/ports.py" owns "$pid" "$port" && return 0
            echo "demo: another process answers on port $port, not the $name this demo started; see $DEMO_DIR/$name.log" >&2; exit 1
        fi
        sleep 0.1
    done
    echo "demo: $url did not come up; see $DEMO_DIR/$name.log" >&2; exit 1
}

say "working in $DEMO_DIR"
MODELS="$DEMO_DIR/models/demo"
for v in 1 2 3; do
    mkdir -p "$MODELS/v$v"
    echo "{\"weights\": {\"x\": $v}}" > "$MODELS/v$v/model.json"
    touch -d "-$((10 - v)) min" "$MODELS/v$v"   # v1 oldest: the history follows first sight, then mtime
done
ln -sfn v3 "$MODELS/current"

# v3 was validated on standard-normal inputs: that is its reference.
"$PY" -c 'import random; print("x"); [print(random.gauss(0, 1)) for _ in range(2000)]' > "$DEMO_DIR/reference.csv"
"$VIGIL" drift reference set --state-dir "$DEMO_DIR/agent" --model demo --version v3 "$DEMO_DIR/reference.csv" >/dev/null

"$VIGIL" run --listen "127.0.0.1:$AGENT_PORT" --state-dir "$DEMO_DIR/agent" \
    --collector.drift.check-interval 1s --collector.drift.window 1000 \
    > "$DEMO_DIR/agent.log" 2>&1 & PIDS+=($!); AGENT_PID=$!
"$VIGIL" rollback-controller --listen "127.0.0.1:$CONTROLLER_PORT" --state-dir "$DEMO_DIR/controller" \
    --release-dir "$MODELS" > "$DEMO_DIR/controller.log" 2>&1 & PIDS+=($!); CONTROLLER_PID=$!
"$PY" "$ROOT/examples/model_server.py" --release-dir "$MODELS" --listen "127.0.0.1:$MODEL_PORT" \
    --model demo --vigil-url "http://127.0.0.1:$AGENT_PORT" \
    --vigil-token-file "$DEMO_DIR/agent/ingest-token" > "$DEMO_DIR/model-server.log" 2>&1 & PIDS+=($!); MODEL_PID=$!
wait_http controller "$CONTROLLER_PID" "$CONTROLLER_PORT" /readyz   # it has written its token by now

"$PY" "$ROOT/scripts/gen-alerts" --for 5s -o "$DEMO_DIR/rules.yml"
sed -e "s#/var/lib/vigil/rollback-token#$DEMO_DIR/controller/rollback-token#" \
    -e "s#127.0.0.1:9476#127.0.0.1:$CONTROLLER_PORT#" \
    -e "s#group_wait: [0-9]*s#group_wait: 1s#" \
    "$ROOT/alerts/alertmanager.yml" > "$DEMO_DIR/alertmanager.yml"
prometheus-alertmanager --config.file="$DEMO_DIR/alertmanager.yml" --storage.path="$DEMO_DIR/am" \
    --web.listen-address="127.0.0.1:$AM_PORT" --cluster.listen-address= \
    > "$DEMO_DIR/alertmanager.log" 2>&1 & PIDS+=($!); AM_PID=$!
cat > "$DEMO_DIR/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [$DEMO_DIR/rules.yml]
alerting: {alertmanagers: [{static_configs: [{targets: ["127.0.0.1:$AM_PORT"]}]}]}
scrape_configs: [{job_name: vigil, static_configs: [{targets: ["127.0.0.1:$AGENT_PORT"]}]}]
YAML
prometheus --config.file="$DEMO_DIR/prometheus.yml" --storage.tsdb.path="$DEMO_DIR/prom" \
    --web.listen-address="127.0.0.1:$PROM_PORT" --rules.alert.resend-delay=1s \
    > "$DEMO_DIR/prometheus.log" 2>&1 & PIDS+=($!); PROM_PID=$!
wait_http agent "$AGENT_PID" "$AGENT_PORT" /readyz
wait_http model-server "$MODEL_PID" "$MODEL_PORT" /
wait_http alertmanager "$AM_PID" "$AM_PORT" /-/ready
wait_http prometheus "$PROM_PID" "$PROM_PORT" /-/ready
say "all up: model server :$MODEL_PORT serves $(readlink "$MODELS/current"); Prometheus :$PROM_PORT, Alertmanager :$AM_PORT"

traffic() {  # 200 requests' inputs every half second, from mean $1
    while :; do
        "$PY" -c "import json, random; print(json.dumps({'rows': [{'x': random.gauss($1, 1)} for _ in range(200)]}))" |
            curl -s -o /dev/null -d @- "http://127.0.0.1:$MODEL_PORT/predict"
        sleep 0.5
    done
}
traffic 0 & T=$!; PIDS+=($T)
sleep 5
say "inputs look like the reference; live version: $(readlink "$MODELS/current")"
kill "$T"; traffic 2 & PIDS+=($!)
START=$EPOCHREALTIME; SECONDS=0
say "inputs drifted (mean 2 instead of 0); waiting for the rollback"
until [ "$(readlink "$MODELS/current")" = v2 ]; do
    sleep 0.1
    if [ "$SECONDS" -gt 120 ]; then echo "demo: no rollback within 120s; logs in $DEMO_DIR" >&2; exit 1; fi
done
TOOK=$("$PY" -c "print(f'{$EPOCHREALTIME - $START:.1f}')")
say "rolled back: current -> $(readlink "$MODELS/current") ${TOOK}s after the first drifted input"
sleep 1
say "model server: $(curl -s "http://127.0.0.1:$MODEL_PORT/")"
say "journal: $(curl -s -H "Authorization: Bearer $(cat "$DEMO_DIR/controller/rollback-token")" \
    "http://127.0.0.1:$CONTROLLER_PORT/v1/rollbacks" | "$PY" -c 'import json, sys
for r in json.load(sys.stdin)["rollbacks"]:
    print("rollback %s: %s | %s %s -> %s" % (r["id"], r["reason"], r["target"], r["plan"], r["result"]))')"
say "drift: $(curl -s -H "Authorization: Bearer $(cat "$DEMO_DIR/agent/ingest-token")" \
    "http://127.0.0.1:$AGENT_PORT/v1/drift" | "$PY" -c 'import json, sys
for r in json.load(sys.stdin)["references"]:
    print("%s %s: %s samples, detected %s" % (r["model"], r["version"], r["samples_total"], r["detected"]))')"
[ "$ONCE" = 1 ] && exit 0
say "running; Ctrl-C stops everything (Prometheus UI: http://127.0.0.1:$PROM_PORT/alerts)"
wait
