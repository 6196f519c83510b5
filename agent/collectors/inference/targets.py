"""Where the inference servers are: listening TCP ports of watched processes, pod
annotations and configured URLs, each turned into a :class:`Target` (address, port, kind).

Discovery (agent.discovery) says which processes are watched; this module only asks the
kernel, through the injected procfs path, which of their sockets listen: the socket inodes
in ``<procfs>/<pid>/fd`` against the LISTEN rows of ``<procfs>/<pid>/net/tcp`` and
``tcp6`` (the tables of the process's own network namespace).

Which address reaches a process (see :func:`address_for`):

- the agent's own network namespace (a bare host, or a pod with hostNetwork): the bound
  address, 127.0.0.1 for a wildcard bind;
- a pod in its own namespace: the pod IP from the pod watcher (a hostNetwork pod's pod IP
  is the node's, so that case needs nothing else);
- a process outside any pod in the host's namespace while the agent runs in a pod without
  hostNetwork (the shipped DaemonSet: hostPID only): 127.0.0.1 would be the agent pod's own
  loopback, so only ``node-address`` reaches it; without it the target is dropped and
  counted (reason no_address);
- a socket bound to loopback only in another namespace cannot be reached at all: dropped.

The parsers are pure; the readers are thin shells around them.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from agent.collectors.inference.kinds import KINDS

LISTEN = "0A"  # TCP_LISTEN in include/net/tcp_states.h, as /proc/net/tcp prints it
LOOPBACK = "127.0.0.1"


# --- /proc/<pid>/net/tcp{,6} and /proc/<pid>/fd (pure) ---------------------------------


@dataclass(frozen=True)
class Listener:
    inode: int
    address: str  # the bound address, "0.0.0.0" / "::" for a wildcard
    port: int


def _hex_address(text: str) -> str:
    """A /proc/net/tcp address: host-order 32-bit words printed in hex (so little-endian
    bytes on x86 and arm64)."""
    raw = bytes.fromhex(text)
    if len(raw) not in (4, 16):
        raise ValueError(f"address {text!r} is neither IPv4 nor IPv6")
    words = struct.unpack(f"<{len(raw) // 4}I", raw)
    packed = struct.pack(f">{len(words)}I", *words)
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, packed)


def parse_tcp_table(text: str) -> list[Listener]:
    """``/proc/<pid>/net/tcp`` or ``tcp6`` contents → the sockets in LISTEN state.

    Malformed rows are skipped (a table read while the kernel rewrites it can end
    mid-line); the header row is recognised by its first field.
    """
    out: list[Listener] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10 or not fields[0].endswith(":") or fields[3] != LISTEN:
            continue
        addr, _, port = fields[1].partition(":")
        try:
            out.append(Listener(int(fields[9]), _hex_address(addr), int(port, 16)))
        except ValueError:
            continue
    return out


def socket_inode(link: str) -> int | None:
    """``readlink /proc/<pid>/fd/N`` → the socket inode, or None for anything else."""
    if link.startswith("socket:[") and link.endswith("]"):
        inner = link[8:-1]
        return int(inner) if inner.isdigit() else None
    return None


def listening(inodes: Iterable[int], tables: Iterable[Listener]) -> list[Listener]:
    """The listeners among a process's sockets, one per port (IPv4 first), port order."""
    own = set(inodes)
    by_port: dict[int, Listener] = {}
    for lst in tables:
        if lst.inode in own and lst.port not in by_port:
            by_port[lst.port] = lst
    return [by_port[p] for p in sorted(by_port)]


# --- addresses (pure) ------------------------------------------------------------------


def _unspecified(address: str) -> bool:
    return ipaddress.ip_address(address).is_unspecified


def address_for(
    listener: Listener,
    proc_ns: str,
    own_ns: str,
    host_ns: str,
    pod_ip: str,
    node_address: str,
) -> str | None:
    """The address the agent connects to for a listener, or None when it cannot reach it.

    ``proc_ns``/``own_ns``/``host_ns``: the ``ns/net`` links of the process, of the agent
    and of pid 1 ("" when unreadable); ``pod_ip``: the process's pod IP, "" outside a pod.
    """
    bound = listener.address
    if proc_ns and proc_ns == own_ns:
        return (LOOPBACK if ":" not in bound else "::1") if _unspecified(bound) else bound
    if pod_ip:
        remote = pod_ip
    elif proc_ns and proc_ns == host_ns and node_address:
        remote = node_address
    else:
        return None
    if _unspecified(bound) or bound == remote:
        return remote
    return None  # bound to loopback (or another address) inside a namespace not ours


# --- configured and annotated targets (pure) -------------------------------------------


@dataclass(frozen=True)
class StaticTarget:
    host: str
    port: int
    base_path: str  # URL path prefix, "" for none
    kind: str  # "" to learn it from the metric names
    model: str  # names the model of a server that names none


def parse_static_target(text: str) -> StaticTarget:
    """``"http://10.0.0.5:8000 kind=vllm model=llama"`` → a StaticTarget; ValueError says
    what is wrong with the entry."""
    words = text.split()
    if not words:
        raise ValueError("an empty target entry")
    url = urllib.parse.urlsplit(words[0])
    if url.scheme != "http":
        raise ValueError(f"{words[0]!r}: only http:// URLs are probed")
    try:
        port = url.port or 80
    except ValueError:
        raise ValueError(f"{words[0]!r}: the port is not a number in 1-65535") from None
    if not url.hostname:
        raise ValueError(f"{words[0]!r}: no host")
    extra: dict[str, str] = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep or key not in ("kind", "model") or key in extra:
            raise ValueError(f"{word!r} in {text!r}: expected kind=KIND and model=MODEL once each")
        extra[key] = value
    kind = extra.get("kind", "")
    if kind and kind not in KINDS:
        raise ValueError(f"kind {kind!r} in {text!r} is not one of {', '.join(KINDS)}")
    return StaticTarget(url.hostname, port, url.path.rstrip("/"), kind, extra.get("model", ""))


@dataclass(frozen=True)
class Annotated:
    port: int
    metrics_path: str  # "" for the kind's
    kind: str  # "" to learn it


def parse_annotations(annotations: Mapping[str, str], prefix: str) -> Annotated | str | None:
    """A pod's annotations → its target; None when the pod has no ``<prefix>-port``; a
    string saying what is wrong when the annotations are unusable."""
    if not prefix:
        return None
    raw = annotations.get(f"{prefix}-port")
    if raw is None:
        return None
    if not raw.strip().isdigit() or not 0 < int(raw) < 65536:
        return f"{prefix}-port={raw!r} is not a port number"
    path = annotations.get(f"{prefix}-path", "").strip()
    if path and not path.startswith("/"):
        return f"{prefix}-path={path!r} does not start with /"
    kind = annotations.get(f"{prefix}-kind", "").strip()
    if kind and kind not in KINDS:
        return f"{prefix}-kind={kind!r} is not one of {', '.join(KINDS)}"
    return Annotated(int(raw), path, kind)


# --- the plan ----------------------------------------------------------------------------

SOURCES = ("config", "annotation", "discovered")


@dataclass(frozen=True)
class Target:
    """One server endpoint to probe. ``labels``: values for agent.discovery.LABEL_NAMES."""

    host: str
    port: int
    source: str  # one of SOURCES
    labels: tuple[str, ...]
    kind: str = ""  # "" until the command line or the metric names tell
    base_path: str = ""
    metrics_path: str = ""  # "" for the kind's
    model: str = ""
    pid: int = 0

    @property
    def key(self) -> tuple[str, int]:
        return (self.host, self.port)


def plan(candidates: Iterable[Target], max_targets: int) -> tuple[list[Target], dict[str, int]]:
    """The targets to probe: the first of each address:port (config before annotations
    before discovery, as given), at most ``max_targets``; and the count of those dropped."""
    seen: set[tuple[str, int]] = set()
    out: list[Target] = []
    dropped = 0
    for t in candidates:
        if t.key in seen:
            continue
        seen.add(t.key)
        if len(out) >= max_targets:
            dropped += 1
            continue
        out.append(t)
    return out, {"max_targets": dropped}


# --- the readers (thin shells) ---------------------------------------------------------


class ProcReader:
    """Reads listening sockets and namespaces under an injected procfs path."""

    def __init__(self, procfs: str) -> None:
        self.procfs = procfs

    def netns(self, pid: int | str) -> str:
        try:
            return os.readlink(f"{self.procfs}/{pid}/ns/net")
        except OSError:
            return ""

    def listeners(self, pid: int) -> list[Listener]:
        """The process's listening sockets; [] when it is gone or not readable (no root)."""
        base = f"{self.procfs}/{pid}"
        inodes: list[int] = []
        try:
            fds = os.listdir(f"{base}/fd")
        except OSError:
            return []
        for fd in fds:
            try:
                inode = socket_inode(os.readlink(f"{base}/fd/{fd}"))
            except OSError:
                continue  # closed since the listing
            if inode is not None:
                inodes.append(inode)
        if not inodes:
            return []
        tables: list[Listener] = []
        for name in ("tcp", "tcp6"):
            try:
                with open(f"{base}/net/{name}", encoding="ascii", errors="replace") as f:
                    tables.extend(parse_tcp_table(f.read()))
            except OSError:
                continue  # no IPv6 in this kernel, or the process is gone
        return listening(inodes, tables)


def discovered(
    processes: Iterable[tuple[int, str, tuple[str, ...], str]],
    reader: ProcReader,
    kind_of: Callable[[str], str | None],
    pod_ip: Callable[[str], str],
    node_address: str,
) -> tuple[list[Target], int]:
    """Targets from watched processes ``(pid, cmdline, labels, pod_uid)``, and how many
    listeners could not be reached (see :func:`address_for`)."""
    own_ns = reader.netns("self")
    host_ns = reader.netns(1)
    out: list[Target] = []
    unreachable = 0
    for pid, cmdline, labels, pod_uid in processes:
        listeners = reader.listeners(pid)
        if not listeners:
            continue
        proc_ns = reader.netns(pid)
        ip = pod_ip(pod_uid) if pod_uid else ""
        kind = kind_of(cmdline) or ""
        for lst in listeners:
            host = address_for(lst, proc_ns, own_ns, host_ns, ip, node_address)
            if host is None:
                unreachable += 1
                continue
            out.append(Target(host, lst.port, "discovered", labels, kind=kind, pid=pid))
    return out, unreachable
