#!/usr/bin/env bash
# Runs the whole suite. pytest exits 5 when it collected nothing: that is a failure here.
#
# Two workers (pytest-xdist): most tests wait on real servers, BPF loads and py-spy windows
# rather than use a core, so two halve the wall time on a 2-core machine. `make test
# ARGS="-n 0"` runs them in one process (for -x, --pdb, or to rule out an interaction).
# --dist loadgroup: a file's tests share one worker (tests/conftest.py gives each its file
# as group), so its module-scoped servers and the tests that build on each other's state
# stay together; the files that load a CPU on purpose or measure their share of one share
# a group, so they never run beside each other.
set -uo pipefail
cd "$(dirname "$0")/.."
# --durations: the slowest tests are named in every run, so the 10-minute budget is watched.
.venv/bin/python -m pytest -n "${VIGIL_TEST_WORKERS:-2}" --dist loadgroup --durations=15 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "run-tests: pytest ran no test; treating that as a failure" >&2
    exit 1
fi
exit "$rc"
