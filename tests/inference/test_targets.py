"""Finding inference servers: the /proc/net/tcp parser, socket inodes, the address a
process is reached at, configured and annotated targets, the target cap — and the
readers against a procfs tree and against this machine's real /proc."""

# ruff: noqa: E501 (kernel tables are as wide as the kernel prints them)

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from agent.collectors.inference.targets import (
    Annotated,
    Listener,
    ProcReader,
    StaticTarget,
    Target,
    address_for,
    discovered,
    listening,
    parse_annotations,
    parse_static_target,
    parse_tcp_table,
    plan,
    socket_inode,
)

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1531 1 0000000060477caf 100 0 0 10 0
   1: 0100007F:D835 0100007F:BD8E 06 00000000:00000000 03:00001344 00000000     0        0 0 3 00000000a8f28884
   2: 0100007F:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2002 1 0000000060477caf 100 0 0 10 0
   3: 0500000A:1F42 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2003 1 0000000060477caf 100 0 0 10 0
   4: 0100007F:1F43 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 2004 1 0000000060477caf 20 4 30 10 -1
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F44 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F45 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3002 1 0000000000000000 100 0 0 10 0
"""


def test_tcp_table_lists_listeners_only_with_decoded_addresses_and_ports() -> None:
    assert parse_tcp_table(TCP) == [
        Listener(1531, "0.0.0.0", 8000),
        Listener(2002, "127.0.0.1", 8001),
        Listener(2003, "10.0.0.5", 8002),
    ]


def test_tcp6_table_decodes_wildcard_and_loopback() -> None:
    assert parse_tcp_table(TCP6) == [Listener(3001, "::", 8004), Listener(3002, "::1", 8005)]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  sl  local_address rem_address   st\n",
        "   0: 00000000:1F40 00000000:0000 0A 00000000:00000000",  # cut mid-line
        "   0: ZZZZ:1F40 00000000:0000 0A 0:0 00:0 0 0 0 77 1",  # not hex
        "   0: 000000:1F40 00000000:0000 0A 0:0 00:0 0 0 0 77 1",  # 3 bytes
        "   0: 00000000:XYZ 00000000:0000 0A 0:0 00:0 0 0 0 77 1",  # bad port
        "   0: 00000000:1F40 00000000:0000 0A 0:0 00:0 0 0 0 inode 1",  # bad inode
    ],
)
def test_malformed_rows_are_skipped(text: str) -> None:
    assert parse_tcp_table(text) == []


@pytest.mark.parametrize(
    ("link", "inode"),
    [
        ("socket:[12345]", 12345),
        ("socket:[]", None),
        ("socket:[12a]", None),
        ("pipe:[12345]", None),
        ("/dev/null", None),
        ("anon_inode:[eventfd]", None),
    ],
)
def test_socket_inode(link: str, inode: int | None) -> None:
    assert socket_inode(link) == inode


def test_listening_keeps_the_process_own_sockets_one_per_port_in_port_order() -> None:
    tables = [*parse_tcp_table(TCP), *parse_tcp_table(TCP6), Listener(9999, "::", 8000)]
    assert listening([2003, 1531, 3001, 9999, 42], tables) == [
        Listener(1531, "0.0.0.0", 8000),
        Listener(2003, "10.0.0.5", 8002),
        Listener(3001, "::", 8004),
    ]


ANY4 = Listener(1, "0.0.0.0", 8000)
ANY6 = Listener(1, "::", 8000)
LO4 = Listener(1, "127.0.0.1", 8000)
LO6 = Listener(1, "::1", 8000)
POD = Listener(1, "10.1.2.3", 8000)


@pytest.mark.parametrize(
    ("listener", "proc_ns", "pod_ip", "node", "want"),
    [
        # The agent's own namespace: loopback, or the bound address.
        (ANY4, "net:[1]", "", "", "127.0.0.1"),
        (ANY6, "net:[1]", "", "", "::1"),
        (LO4, "net:[1]", "", "", "127.0.0.1"),
        (LO6, "net:[1]", "", "", "::1"),
        (POD, "net:[1]", "", "", "10.1.2.3"),
        # Own namespace wins even in a pod (a hostNetwork pod beside a hostNetwork agent).
        (ANY4, "net:[1]", "10.9.9.9", "", "127.0.0.1"),
        # A pod in its own namespace: the pod IP, unless bound to loopback or elsewhere.
        (ANY4, "net:[3]", "10.1.2.3", "", "10.1.2.3"),
        (ANY6, "net:[3]", "10.1.2.3", "", "10.1.2.3"),
        (POD, "net:[3]", "10.1.2.3", "", "10.1.2.3"),
        (LO4, "net:[3]", "10.1.2.3", "", None),
        (Listener(1, "10.7.7.7", 8000), "net:[3]", "10.1.2.3", "", None),
        # Unreadable namespace, pod known: the pod IP.
        (ANY4, "", "10.1.2.3", "", "10.1.2.3"),
        # The host's namespace, agent in its own pod: only through node-address.
        (ANY4, "net:[2]", "", "", None),
        (ANY4, "net:[2]", "", "192.168.1.10", "192.168.1.10"),
        (LO4, "net:[2]", "", "192.168.1.10", None),
        # Some other namespace (a container outside Kubernetes): unreachable.
        (ANY4, "net:[4]", "", "192.168.1.10", None),
        (ANY4, "", "", "192.168.1.10", None),
    ],
)
def test_address_for(
    listener: Listener, proc_ns: str, pod_ip: str, node: str, want: str | None
) -> None:
    assert address_for(listener, proc_ns, "net:[1]", "net:[2]", pod_ip, node) == want


def test_address_for_agent_in_the_host_namespace() -> None:
    # Bare host, or hostNetwork agent: own == host, so host processes are at loopback.
    assert address_for(ANY4, "net:[2]", "net:[2]", "net:[2]", "", "") == "127.0.0.1"


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("http://10.0.0.5:8000 kind=vllm", StaticTarget("10.0.0.5", 8000, "", "vllm", "")),
        (
            "http://h:8080/base/ kind=oip model=iris",
            StaticTarget("h", 8080, "/base", "oip", "iris"),
        ),
        ("http://h", StaticTarget("h", 80, "", "", "")),
        ("  http://[::1]:9000   model=m ", StaticTarget("::1", 9000, "", "", "m")),
    ],
)
def test_static_target(text: str, want: StaticTarget) -> None:
    assert parse_static_target(text) == want


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("https://h:1 kind=vllm", "only http"),
        ("10.0.0.5:8000", "only http"),
        ("http://h:99999", "port"),
        ("http://:80", "no host"),
        ("http://h kind=nginx", "not one of"),
        ("http://h kind=vllm kind=tgi", "once each"),
        ("http://h vllm", "expected kind=KIND"),
        ("http://h version=3", "expected kind=KIND"),
    ],
)
def test_static_target_errors_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_static_target(text)


P = "vigil.dev/inference"


@pytest.mark.parametrize(
    ("annotations", "want"),
    [
        ({}, None),
        ({"prometheus.io/port": "8000"}, None),
        ({f"{P}-port": "8000"}, Annotated(8000, "", "")),
        (
            {f"{P}-port": "8002", f"{P}-path": "/metrics", f"{P}-kind": "triton"},
            Annotated(8002, "/metrics", "triton"),
        ),
        ({f"{P}-port": "http"}, f"{P}-port='http' is not a port number"),
        ({f"{P}-port": "0"}, f"{P}-port='0' is not a port number"),
        ({f"{P}-port": "70000"}, f"{P}-port='70000' is not a port number"),
        ({f"{P}-port": "80", f"{P}-path": "metrics"}, f"{P}-path='metrics' does not start with /"),
        ({f"{P}-port": "80", f"{P}-kind": "x"}, f"{P}-kind='x' is not one of"),
    ],
)
def test_annotations(annotations: dict[str, str], want: object) -> None:
    got = parse_annotations(annotations, P)
    if isinstance(want, str):
        assert isinstance(got, str) and got.startswith(want)
    else:
        assert got == want


def test_annotations_off_with_an_empty_prefix() -> None:
    assert parse_annotations({"-port": "80"}, "") is None


def t(host: str, port: int, source: str = "discovered") -> Target:
    return Target(host, port, source, ("", "", "", "x", "1"))


def test_plan_dedupes_by_address_first_wins_and_caps_with_a_count() -> None:
    cands = [t("a", 1, "config"), t("a", 1), t("b", 1, "annotation"), t("c", 1), t("d", 1)]
    targets, dropped = plan(cands, 3)
    assert [(x.host, x.source) for x in targets] == [
        ("a", "config"),
        ("b", "annotation"),
        ("c", "discovered"),
    ]
    assert dropped == {"max_targets": 1}
    assert plan(cands, 10)[1] == {"max_targets": 0}


# --- the readers -----------------------------------------------------------------------


def fake_proc(
    root: Path, pid: int, fds: dict[str, str], tcp: str, tcp6: str | None, ns: str
) -> None:
    d = root / str(pid)
    (d / "fd").mkdir(parents=True)
    (d / "net").mkdir()
    (d / "ns").mkdir()
    for fd, target in fds.items():
        os.symlink(target, d / "fd" / fd)
    (d / "net" / "tcp").write_text(tcp)
    if tcp6 is not None:
        (d / "net" / "tcp6").write_text(tcp6)
    os.symlink(ns, d / "ns" / "net")


def test_reader_on_a_procfs_tree(tmp_path: Path) -> None:
    fake_proc(
        tmp_path,
        10,
        {"0": "/dev/null", "3": "socket:[1531]", "4": "socket:[3002]", "5": "pipe:[7]"},
        TCP,
        TCP6,
        "net:[1]",
    )
    fake_proc(tmp_path, 11, {"3": "socket:[2003]"}, TCP, None, "net:[3]")  # no tcp6 table
    fake_proc(tmp_path, 12, {"3": "socket:[1531]"}, TCP, TCP6, "net:[2]")
    fake_proc(tmp_path, 13, {}, TCP, TCP6, "net:[1]")
    os.symlink("10", tmp_path / "self")
    os.symlink("12", tmp_path / "1")
    reader = ProcReader(str(tmp_path))
    assert reader.listeners(10) == [Listener(1531, "0.0.0.0", 8000), Listener(3002, "::1", 8005)]
    assert reader.listeners(11) == [Listener(2003, "10.0.0.5", 8002)]
    assert reader.listeners(13) == []
    assert reader.listeners(99) == []  # gone
    assert reader.netns(99) == ""
    procs = [
        (10, "vllm serve m", ("", "", "", "vllm", "10"), ""),
        (11, "python -m sglang.launch_server", ("p", "ns", "c", "python", ""), "uid-1"),
        (12, "tritonserver", ("", "", "", "tritonserver", "12"), ""),
        (13, "x", ("", "", "", "x", "13"), ""),
    ]
    found, unreachable = discovered(
        procs, reader, lambda c: c.split()[0], {"uid-1": "10.0.0.5"}.get, node_address=""
    )
    assert [(x.host, x.port, x.kind, x.pid) for x in found] == [
        ("127.0.0.1", 8000, "vllm", 10),
        ("::1", 8005, "vllm", 10),
        ("10.0.0.5", 8002, "python", 11),
    ]
    assert found[2].labels == ("p", "ns", "c", "python", "")
    assert unreachable == 1  # pid 12 in the host namespace, no node address
    found, unreachable = discovered(procs, reader, lambda c: None, lambda u: "", "192.168.0.9")
    assert ("192.168.0.9", 8000, "", 12) in [(x.host, x.port, x.kind, x.pid) for x in found]


def test_reader_finds_a_real_listening_socket_of_this_process() -> None:
    with socket.socket() as s, socket.socket(socket.AF_INET6) as s6:
        s.bind(("127.0.0.1", 0))
        s.listen()
        s6.bind(("::1", 0))
        s6.listen()
        with socket.socket() as idle:  # bound, not listening: not a server
            idle.bind(("127.0.0.1", 0))
            ports = {lst.port for lst in ProcReader("/proc").listeners(os.getpid())}
            assert s.getsockname()[1] in ports
            assert s6.getsockname()[1] in ports
            assert idle.getsockname()[1] not in ports
    reader = ProcReader("/proc")
    assert reader.netns(os.getpid()) == reader.netns("self") != ""
