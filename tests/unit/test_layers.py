"""The agent's layers, read from its imports: no import cycle among agent modules, and no
collector reaching up into the server, the command line or the rollback controller.

What counts as an import: every ``import``/``from ... import`` at module level, including
inside module-level ``try``/``if``/``with`` blocks and class bodies, and including
``if TYPE_CHECKING:`` blocks: a type-only import is still a dependency between layers
(config.py and registry.py once imported each other that way). Imports inside a function
do not count: they run late and on one path (agent/cli.py loads agent/app.py only for
`vigil run`), so a function may reach up a layer, a module may not.
``from agent.x import name`` is an edge to ``agent.x.name`` when that is a module, else to
``agent.x``. A package's ``__init__`` is not implied by importing one of its modules: it
is a module like the others, with its own edges.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[2] / "agent"

# Nothing under agent/collectors/ may import these (or anything below them): they are the
# layers above the collectors.
ABOVE_COLLECTORS = (
    "agent.server",
    "agent.cli",
    "agent.app",
    "agent.doctor",
    "agent.drift.cli",
    "agent.rollback",
)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _load_time_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Module-level statements: the body, and the bodies of module-level try/if/with blocks
    and classes (TYPE_CHECKING blocks included), but not the bodies of functions."""
    for node in body:
        if isinstance(node, ast.If):
            yield from _load_time_statements(node.body)
            yield from _load_time_statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _load_time_statements(block)
            for handler in node.handlers:
                yield from _load_time_statements(handler.body)
        elif isinstance(node, ast.With | ast.ClassDef):
            yield from _load_time_statements(node.body)
        else:
            yield node


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The agent modules ``name`` imports when it loads."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in _load_time_statements(tree.body):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                package = name if is_package else name.rsplit(".", 1)[0]
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            targets = [
                f"{source}.{a.name}" if f"{source}.{a.name}" in known else source
                for a in node.names
            ]
        else:
            continue
        out.update(t for t in targets if t in known and t != name)
    return out


def graph(root: Path) -> dict[str, set[str]]:
    mods = modules(root)
    known = set(mods)
    return {name: imports(name, path, known) for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for name, targets in sorted(edges.items()):
        if not name.startswith("agent.collectors"):
            continue
        for t in sorted(targets):
            if any(t == a or t.startswith(a + ".") for a in ABOVE_COLLECTORS):
                bad.append(f"{name} imports {t}")
    return bad


def test_the_agent_has_no_import_cycle() -> None:
    edges = graph(AGENT)
    assert len(edges) > 50, "the walk found too few modules to mean anything"
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_collector_imports_the_layers_above_it() -> None:
    edges = graph(AGENT)
    assert any(n.startswith("agent.collectors.") for n in edges)
    assert upward_imports(edges) == []


# The checks must be able to fail: the same walk over small trees that break each rule.


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / "agent" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "agent"


def test_a_cycle_is_found(tmp_path: Path) -> None:
    agent = write(
        tmp_path,
        {
            "__init__.py": "",
            "config.py": "from agent.registry import Spec\n",
            # Type-only, as config.py and registry.py once were: still a cycle.
            "registry.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from agent import config\n",
        },
    )
    assert find_cycle(graph(agent)) == ["agent.config", "agent.registry", "agent.config"]


@pytest.mark.parametrize(
    ("where", "text", "counts"),
    [
        ("module level", "from agent.server import read_body\n", True),
        ("relative", "from ...server import read_body\n", True),
        ("module-level try", "try:\n    import agent.cli\nexcept ImportError:\n    pass\n", True),
        ("package", "from agent import rollback\n", True),
        (
            "TYPE_CHECKING",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from agent.server import S\n",
            True,
        ),
        ("function", "def f():\n    from agent.app import Agent\n", False),
    ],
)
def test_an_upward_import_is_found(tmp_path: Path, where: str, text: str, counts: bool) -> None:
    agent = write(
        tmp_path,
        {
            "__init__.py": "",
            "server.py": "",
            "cli.py": "",
            "app.py": "",
            "rollback/__init__.py": "",
            "collectors/__init__.py": "",
            "collectors/tiny/__init__.py": "",
            "collectors/tiny/collector.py": text,
        },
    )
    found = upward_imports(graph(agent))
    assert bool(found) == counts, (where, found)
