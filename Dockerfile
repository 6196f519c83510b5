# Vigil node agent. Installs through the same scripts/setup.sh as developers and CI.
#
#   docker build -t vigil .
#   docker run --pid=host --cap-add BPF --cap-add PERFMON --cap-add SYS_PTRACE \
#     --cap-add SYS_RESOURCE \
#     -v /:/host:ro -e VIGIL_COLLECTOR_SCHED_HOST_ROOT=/host \
#     -v /sys/kernel/tracing:/sys/kernel/tracing -p 9475:9475 vigil
# The base image by digest (the multi-arch index of debian:12-slim), so that a rebuild
# gets the same bytes; the tag stays beside it for readers. Update both together.
FROM debian:12-slim@sha256:88200866dfff7ea7f5cbcb6ec7c8a701889efe6fe859fe64d6990e4b07ea4171

ENV DEBIAN_FRONTEND=noninteractive \
    VIGIL_SETUP_MINIMAL=1 \
    VIGIL_SETUP_NO_KERNEL=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /opt/vigil
# requirements-runtime.lock pins every Python package with its sha256 (scripts/lock);
# setup.sh installs it with pip --require-hashes, so nothing unchecked enters the image.
COPY pyproject.toml README.md requirements-runtime.lock ./
COPY agent ./agent
COPY clients/python ./clients/python
COPY probes ./probes
COPY scripts/setup.sh ./scripts/setup.sh

# Kernel headers and tracefs come from the node (the DaemonSet mounts the node's root
# read-only at /host, /sys/kernel/tracing and /sys/kernel/debug), never from the image: they
# must match the node's kernel (docs/compatibility.md lists the header sources).
RUN bash scripts/setup.sh \
    && rm -rf /var/lib/apt/lists/* /root/.cache

EXPOSE 9475
ENTRYPOINT ["/opt/vigil/.venv/bin/vigil"]
CMD ["run"]
