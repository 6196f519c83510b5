#!/usr/bin/env bash
# Runs the whole suite. pytest exits 5 when it collected nothing: that is a failure here.
#
# Two workers (pytest-xdist): most tests wait on real servers, BPF loads and py-spy windows
# rather than use a core, so two halve the wall time on a 2-core machine. `make test
# ARGS="-n 0"` runs them in one process (for -x, --pdb, or to rule out an interaction).
# --dist loadgroup: a file's tests share one worker (tests/conftest.py gives each its file
# as group), so its module-scoped servers and the tests that build on each other's state
# stay together; the files that load a CPU on purpose share one group.
# Tests marked `alone` measure a process's share of a CPU from py-spy's samples; beside a
# busy test they measure the neighbour, so they run second, in one process, with nothing
# beside them.
# --durations: the slowest tests are named in every run, so the 10-minute budget is watched.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTEST=(.venv/bin/python -m pytest --durations=15)

"${PYTEST[@]}" -n "${VIGIL_TEST_WORKERS:-2}" --dist loadgroup -m "not alone" "$@"
rc_parallel=$?
"${PYTEST[@]}" -m alone "$@" -n 0
rc_alone=$?

# A phase that selected nothing (exit 5) is fine when the other one ran tests: a path given
# in ARGS may hold only one kind. Both selecting nothing is a failure.
if [ "$rc_parallel" -eq 5 ] && [ "$rc_alone" -eq 5 ]; then
    echo "run-tests: pytest ran no test; treating that as a failure" >&2
    exit 1
fi
for rc in "$rc_parallel" "$rc_alone"; do
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then
        exit "$rc"
    fi
done
exit 0
