# Vigil node agent. Installs through the same scripts/setup.sh as developers and CI.
#
#   docker build -t vigil .
#   docker run --pid=host --cap-add BPF --cap-add PERFMON --cap-add SYS_PTRACE \
#     -v /lib/modules:/lib/modules:ro -v /usr/src:/usr/src:ro \
#     -v /sys/kernel/tracing:/sys/kernel/tracing -p 9475:9475 vigil
FROM debian:12-slim

ENV DEBIAN_FRONTEND=noninteractive \
    VIGIL_SETUP_MINIMAL=1 \
    VIGIL_SETUP_NO_KERNEL=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /opt/vigil
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY probes ./probes
COPY scripts/setup.sh ./scripts/setup.sh

# Kernel headers and tracefs come from the node (the DaemonSet mounts /lib/modules,
# /usr/src and /sys/kernel/tracing), never from the image: they must match the host kernel.
RUN bash scripts/setup.sh \
    && rm -rf /var/lib/apt/lists/* /root/.cache

EXPOSE 9475
ENTRYPOINT ["/opt/vigil/.venv/bin/vigil"]
CMD ["run"]
