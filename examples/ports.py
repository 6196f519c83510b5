#!/usr/bin/env python3
"""Port checks for the example scripts (Linux; standard library only).

    ports.py free NAME=PORT ...   exit 1, one line per taken port on stderr, when any is
                                  taken on 127.0.0.1
    ports.py owns PID PORT        exit 0 when process PID itself listens on PORT

`free` runs before a script starts anything, so a taken port is a one-line error instead of
a server that fails to listen in a log nobody reads. `owns` runs once a server answers, so
a readiness check that reached some other process on that port (started before ours, or
between the `free` check and our bind) is not taken for ours.
"""

from __future__ import annotations

import os
import socket
import sys

LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's "st" column


def taken(port: int) -> bool:
    with socket.socket() as s:
        # SO_REUSEADDR: a port whose last connection is in TIME_WAIT is free to a server.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on ``port`` (IPv4 and IPv6) in this network namespace."""
    out: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f)  # header
                for line in f:
                    fields = line.split()
                    local, state, inode = fields[1], fields[3], fields[9]
                    if state == LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                        out.add(inode)
        except OSError:
            continue  # no IPv6 in this kernel: the other table is enough
    return out


def owns(pid: int, port: int) -> bool:
    inodes = listening_inodes(port)
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False  # gone (or not ours to look at): not the process we started
    for fd in fds:
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "free":
        bad = 0
        for arg in argv[1:]:
            name, _, port = arg.partition("=")
            if taken(int(port)):
                print(
                    f"port {port} ({name}) is already in use on 127.0.0.1: stop what listens "
                    f"there or set {name} to a free port",
                    file=sys.stderr,
                )
                bad += 1
        return 1 if bad else 0
    if len(argv) == 3 and argv[0] == "owns":
        return 0 if owns(int(argv[1]), int(argv[2])) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
