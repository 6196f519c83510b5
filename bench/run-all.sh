#!/usr/bin/env bash
# Runs every benchmark under bench/ in turn (`make bench`), or the ones named:
#   bench/run-all.sh                 all of them
#   bench/run-all.sh drift gpu_poll  just these
# Each prints its own medians and ratios; record them in bench/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
names=("$@")
if [ "${#names[@]}" -eq 0 ]; then
    for d in bench/*/; do names+=("$(basename "$d")"); done
fi
status=0
for name in "${names[@]}"; do
    dir="bench/$name"
    echo "=== $name ==="
    if [ -x "$dir/run" ]; then
        "$dir/run" || status=1
    elif [ -f "$dir/run.py" ]; then
        "$PY" "$dir/run.py" || status=1
    else
        echo "no $dir/run or $dir/run.py" >&2
        status=1
    fi
done
exit "$status"
