"""Cgroup ids (what the sched probe keys on in cgroup mode) → cgroup paths and pod labels.

A cgroup v2 id is the inode number of the cgroup's directory in the cgroup2 mount, so a
walk of that mount resolves them. The walk is repeated only when an id is not known yet.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from agent.discovery import PodResolver, parse_cgroup


def cgroup2_mount(mounts_text: str) -> str | None:
    """The cgroup2 mount point from a ``/proc/self/mounts`` text (hybrid hosts have one too)."""
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "cgroup2":
            return parts[1].replace("\\040", " ")
    return None


def cgroup_labels(path: str, resolver: PodResolver | None = None) -> tuple[str, ...]:
    """Values for (pod, namespace, container, cgroup) of a cgroup path such as ``/kubepods/…``."""
    ident = parse_cgroup(f"0::{path}")
    pod, namespace, container = ident.pod_uid, "", ident.container_id[:12]
    if ident.pod_uid and resolver is not None:
        found = resolver.lookup(ident.pod_uid)
        if found is not None:
            pod, namespace, containers = found
            container = containers.get(ident.container_id, "") or container
    return (pod, namespace, container, path)


class CgroupNames:
    """Resolves cgroup ids by walking the cgroup2 mount; ``root`` may be given directly."""

    def __init__(self, procfs: str = "/proc", root: str | None = None) -> None:
        self.procfs = procfs
        self._root = root
        self._names: dict[int, str] = {}

    def root(self) -> str | None:
        if self._root is None:
            try:
                with open(f"{self.procfs}/self/mounts") as f:
                    self._root = cgroup2_mount(f.read())
            except OSError:
                return None
        return self._root

    def walk(self) -> dict[int, str]:
        root = self.root()
        names: dict[int, str] = {}
        if root is None:
            return names
        for dirpath, _dirs, _files in os.walk(root):
            try:
                ino = os.stat(dirpath).st_ino
            except OSError:
                continue  # removed during the walk
            rel = os.path.relpath(dirpath, root)
            names[ino] = "/" if rel == "." else "/" + rel
        return names

    def resolve(self, ids: Iterable[int]) -> dict[int, str]:
        """Paths of the ids that still exist; unknown ids trigger one fresh walk."""
        wanted = set(ids)
        if not wanted <= self._names.keys():
            self._names = self.walk()
        return {i: self._names[i] for i in wanted if i in self._names}
