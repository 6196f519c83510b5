#!/usr/bin/env bash
# One idempotent installer for Vigil, shared by the Makefile, the Dockerfile and CI.
#
# As root on Debian 12 it installs the system packages the agent and its tests need,
# makes kernel headers visible to bcc, mounts tracefs, and creates .venv. Not root, it
# skips the system steps (saying which) and only builds .venv. Each step checks before it
# acts, so a second run does nothing and takes about a second.
#
#   scripts/setup.sh            everything
#   VIGIL_SETUP_MINIMAL=1 ...   runtime only: no test/benchmark tools (the container image)
#   VIGIL_SETUP_NO_KERNEL=1 ... skip kernel headers and tracefs (an image build: the node's
#                               own /lib/modules, /usr/src and tracefs are mounted at run time)
#   VIGIL_BIN_DIR=DIR ...       where root gets a `vigil` link to .venv/bin/vigil (default
#                               /usr/local/bin; empty: no link)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VIGIL_VENV:-$ROOT/.venv}"
# bcc's Python module ships only as Debian's python3-bpfcc, built for the system Python,
# so the venv is made from that interpreter and sees its dist-packages.
SYSTEM_PYTHON="${VIGIL_SYSTEM_PYTHON:-/usr/bin/python3}"
MINIMAL="${VIGIL_SETUP_MINIMAL:-0}"
NO_KERNEL="${VIGIL_SETUP_NO_KERNEL:-0}"
BIN_DIR="${VIGIL_BIN_DIR-/usr/local/bin}"

log() { printf 'setup: %s\n' "$*" >&2; }

is_root() { [ "$(id -u)" -eq 0 ]; }

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

APT_UPDATED=0
apt_install() {
    local missing=()
    for p in "$@"; do have_pkg "$p" || missing+=("$p"); done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        apt-get update -qq
        APT_UPDATED=1
    fi
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_system_packages() {
    if ! command -v apt-get >/dev/null; then
        log "no apt-get: not a Debian system; install python3-bpfcc, kernel headers, prometheus and prometheus-alertmanager yourself"
        return 0
    fi
    # xz-utils: bcc unpacks /sys/kernel/kheaders.tar.xz with `tar -xf` on nodes whose
    # only kernel headers are the kernel's own (CONFIG_IKHEADERS, e.g. Flatcar).
    local pkgs=(python3 python3-venv python3-dev gcc make ca-certificates
                python3-bpfcc bpfcc-tools xz-utils)
    if [ "$MINIMAL" != 1 ]; then
        # Real binaries for the end-to-end tests; linux-perf for `perf bench` in bench/;
        # bpftool to prove BPF programs are detached at shutdown; curl for the demo;
        # prometheus-node-exporter, the anchor of bench/footprint.
        pkgs+=(prometheus prometheus-alertmanager linux-perf procps bpftool curl
               prometheus-node-exporter)
        # tmux: the `vigil top` tests drive the real terminal view in it (keys, screen).
        pkgs+=(tmux)
        # `kubectl kustomize` renders deploy/ in the tests; any kubectl will do.
        command -v kubectl >/dev/null || pkgs+=(kubernetes-client)
    fi
    apt_install "${pkgs[@]}"
}

# bcc compiles probes with clang at load time and needs kernel headers even with BTF.
install_kernel_headers() {
    local rel build
    rel="$(uname -r)"
    build="/lib/modules/$rel/build"
    if [ -e "$build/include" ] || [ -e "$build/Makefile" ]; then
        return 0
    fi
    if apt-cache show "linux-headers-$rel" >/dev/null 2>&1 || { apt-get update -qq && apt-cache show "linux-headers-$rel" >/dev/null 2>&1; }; then
        apt_install "linux-headers-$rel"
        [ -e "$build" ] && return 0
    fi
    # No headers for this kernel (custom or cloud kernels): the distribution's generic
    # headers are enough for tracepoint programs, which read fields by the running
    # kernel's tracefs format, never by struct offsets.
    log "no linux-headers-$rel in the archive; linking Debian's generic headers for bcc"
    apt_install linux-headers-amd64
    local arch common
    arch="$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1)"
    common="$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -1)"
    if [ -z "$arch" ] || [ -z "$common" ]; then
        log "WARNING: generic headers not found under /usr/src; the sched collector will not load"
        return 0
    fi
    mkdir -p "/lib/modules/$rel"
    ln -sfn "$arch" "/lib/modules/$rel/build"
    ln -sfn "$common" "/lib/modules/$rel/source"
    log "linked $build -> $arch"
}

mount_tracefs() {
    if [ -e /sys/kernel/tracing/events ] ; then return 0; fi
    if mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null; then
        log "mounted tracefs at /sys/kernel/tracing"
    else
        log "WARNING: could not mount tracefs at /sys/kernel/tracing; the sched collector will not load"
    fi
}

make_venv() {
    if [ ! -x "$SYSTEM_PYTHON" ]; then
        log "no $SYSTEM_PYTHON; falling back to $(command -v python3) (bcc will not be importable)"
        SYSTEM_PYTHON="$(command -v python3)"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating $VENV from $SYSTEM_PYTHON (with system site-packages, for bcc)"
        "$SYSTEM_PYTHON" -m venv --system-site-packages "$VENV"
    fi
    # Exactly the versions and files the lock names (scripts/lock writes it): pip refuses
    # any download whose sha256 is not in it. The image takes the runtime subset.
    local lock="$ROOT/requirements.lock"
    [ "$MINIMAL" = 1 ] && lock="$ROOT/requirements-runtime.lock"
    # Reinstall only when the lock changed since the last install into this venv.
    local stamp="$VENV/.vigil-deps" want
    want="$(sha256sum "$lock" | cut -d' ' -f1) $(basename "$lock")"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        log "installing Python dependencies from $(basename "$lock") into $VENV"
        # Hosts with a local wheel mirror configured but absent print one warning per
        # package; they say nothing about this install, so they are filtered out.
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
            --require-hashes -r "$lock" \
            2> >(grep -v 'is ignored: it is neither' >&2)
        # Vigil itself: its dependencies are all in the lock, and the build backend too, so
        # nothing is fetched unchecked. setuptools reports every editable install with a
        # multi-line "Editable installation." notice that asks nothing of the user; only
        # that message is silenced, its errors and other warnings still show.
        PYTHONWARNINGS="ignore:Editable installation" \
            "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
            --no-deps --no-build-isolation -e "$ROOT" \
            2> >(grep -v 'is ignored: it is neither' >&2)
        echo "$want" > "$stamp"
    fi
    # The drift client (clients/python, distribution vigil-client), which the agent imports.
    # A path in this repository, not a download, so the lock's hashes do not cover it; it
    # has no dependencies (--no-deps) and a standard-library build backend (--no-index).
    # Editable, so the checkout's source is what runs; checked apart from the lock stamp so
    # that a venv made before the client had its own package gets it too.
    if ! "$VENV/bin/python" -c 'import vigil_client' 2>/dev/null; then
        log "installing the drift client (clients/python) into $VENV"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
            --no-deps --no-index -e "$ROOT/clients/python" \
            2> >(grep -v 'is ignored: it is neither' >&2)
    fi
}

# The oldest nvidia-ml-py that pyproject.toml allows, beside the venv (which holds the
# newest), for tests/gpu/test_gpu_drivers.py to run the GPU collector against both ends.
install_nvml_floor() {
    local floor dir
    floor="$(grep -o '"nvidia-ml-py>=[0-9.]*' "$ROOT/pyproject.toml" | cut -d= -f2)"
    [ -n "$floor" ] || return 0
    dir="$ROOT/tests/.build/nvml-$floor"
    [ -f "$dir/pynvml.py" ] && return 0
    log "installing nvidia-ml-py $floor into $dir (the pin's lower end, for the tests)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
        --target "$dir" "nvidia-ml-py==$floor" 2> >(grep -v 'is ignored: it is neither' >&2)
}

# The real inference server the inference tests run (tests/inference/servers.py): MLServer
# with its scikit-learn runtime, in a venv of its own so that its pins never meet Vigil's.
# Hash-checked like .venv; reinstalled only when requirements-servers.lock changed.
# About half a minute and 525 MB (105 MB downloaded) the first time.
install_test_servers() {
    local venv="${VIGIL_SERVERS_VENV:-$ROOT/.venv-servers}"
    local lock="$ROOT/requirements-servers.lock"
    local stamp="$venv/.vigil-deps" want
    want="$(sha256sum "$lock" | cut -d' ' -f1) $(basename "$lock")"
    [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
    if [ ! -x "$venv/bin/python" ]; then
        log "creating $venv (the inference server the tests run)"
        "$SYSTEM_PYTHON" -m venv "$venv"
    fi
    log "installing MLServer from $(basename "$lock") into $venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        --require-hashes -r "$lock" \
        2> >(grep -v 'is ignored: it is neither' >&2)
    echo "$want" > "$stamp"
}

# `vigil` where the user types it: a link on root's PATH to this checkout's venv. A link
# that points elsewhere (another checkout, a removed one) is replaced: the last `make`
# wins. A file that is not a link is someone else's `vigil` and is left alone.
link_cli() {
    local link="$BIN_DIR/vigil" target="$VENV/bin/vigil"
    [ -n "$BIN_DIR" ] || return 0
    if ! is_root; then
        log "not root: \`vigil\` is $target (put $VENV/bin on PATH, or run \`sudo make setup\` once)"
        return 0
    fi
    [ "$(readlink "$link" 2>/dev/null)" = "$target" ] && return 0
    if [ -e "$link" ] && [ ! -L "$link" ]; then
        log "$link exists and is not a link: leaving it; this checkout's is $target"
        return 0
    fi
    mkdir -p "$BIN_DIR"
    ln -sfn "$target" "$link"
    log "linked $link -> $target"
}

main() {
    if is_root; then
        install_system_packages
        if [ "$NO_KERNEL" = 1 ]; then
            log "VIGIL_SETUP_NO_KERNEL=1: leaving kernel headers and tracefs to the host"
        else
            install_kernel_headers
            mount_tracefs
        fi
    else
        log "not root: skipping system packages, kernel headers and tracefs (the sched collector needs them; run this script as root once)"
    fi
    make_venv
    [ "$MINIMAL" = 1 ] || install_nvml_floor
    [ "$MINIMAL" = 1 ] || install_test_servers
    link_cli
    log "ready: $VENV/bin/vigil"
}

main "$@"
