#!/usr/bin/env bash
# Runs the whole suite. pytest exits 5 when it collected nothing: that is a failure here.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "run-tests: pytest ran no test; treating that as a failure" >&2
    exit 1
fi
exit "$rc"
