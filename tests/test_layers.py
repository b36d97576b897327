"""The package's declared layer order (docs/architecture.md) holds for every import.

Every ``import`` / ``from ... import`` of every module under ``src/semiseg3d`` is read from
its syntax tree (module level, inside functions and under ``if TYPE_CHECKING`` alike). A
module may import its own layer and the layers below it, never one above; the graph of
imports between packages has no cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from semiseg3d.paths import repo_root

#: bottom to top; a layer may import itself and the layers before it (docs/architecture.md)
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "paths", "cliargs"),
    ("io",),
    ("config",),
    ("accel", "bf16check", "compiled"),
    ("data",),
    ("models",),
    ("losses",),
    ("methods",),
    ("training",),
    ("inference",),
    ("evaluation",),
    ("grid",),
    ("reporting",),
    ("cli", "__main__", "doctor"),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
PACKAGE = repo_root() / "src" / "semiseg3d"


def _unit(module: str) -> str:
    """``semiseg3d.X[.Y...]`` -> ``X`` (a subpackage or a top-level module); the package
    root itself -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every import in ``path`` that names a semiseg3d module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    module = _module_name(path)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                # ``from semiseg3d import x``: the unit is x when x is a module or package
                sub = PACKAGE / alias.name
                is_unit = sub.is_dir() or sub.with_suffix(".py").is_file()
                unit = target == "semiseg3d" and is_unit
                found.append((node.lineno, f"{target}.{alias.name}" if unit else target))
    return [(line, name) for line, name in found if name.split(".")[0] == "semiseg3d"]


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    against: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        src_unit = _unit(_module_name(path))
        for line, target in _imports(path):
            dst_unit = _unit(target)
            if not dst_unit or dst_unit == src_unit:
                continue
            edges[src_unit].add(dst_unit)
            if RANK[dst_unit] > RANK[src_unit]:
                rel = path.relative_to(PACKAGE.parent)
                against.append(f"{rel}:{line}: {src_unit} imports {target} (a higher layer)")
    return edges, against


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_every_unit_of_the_package_has_a_layer() -> None:
    units = {_unit(_module_name(p)) for p in PACKAGE.rglob("*.py")} - {""}
    assert units <= set(RANK), f"no layer for {sorted(units - set(RANK))}"


def test_no_import_goes_up_the_layer_order() -> None:
    _, against = _graph()
    assert not against, "\n".join(against)


def test_the_package_graph_has_no_cycle() -> None:
    edges, _ = _graph()
    assert _cycle(edges) is None, f"package cycle: {' -> '.join(_cycle(edges) or [])}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # hand-made cases of what the reader must catch
        ("def f():\n    from semiseg3d.training import trainer\n", ["semiseg3d.training"]),
        ("import semiseg3d.methods.base as b\n", ["semiseg3d.methods.base"]),
        ("from semiseg3d import data\n", ["semiseg3d.data"]),
        ("from semiseg3d import __version__\n", ["semiseg3d"]),
        (
            "if TYPE_CHECKING:\n    from semiseg3d.grid.run_config import RunKey\n",
            ["semiseg3d.grid.run_config"],
        ),
        ("import torch\nfrom typing import Any\n", []),
    ],
)
def test_the_reader_sees_imports_inside_functions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, expected: list[str]
) -> None:
    fake = tmp_path / "semiseg3d" / "data" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(source, encoding="utf-8")
    monkeypatch.setattr(f"{__name__}.PACKAGE", tmp_path / "semiseg3d")
    assert [name for _, name in _imports(fake)] == expected


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None
