"""The package's layout (docs/design.md): small modules, layers that import only downward."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import noisear_rl

PACKAGE = Path(noisear_rl.__file__).parent
MAX_LINES = 400
WORLD_INFO = "noisear_rl.worlds.info"  # imports nothing of the project, so every layer may read it


def modules() -> Iterator[tuple[str, Path]]:
    """(dotted name, path) of every module of the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def layer(module: str) -> str:
    """The node of the import graph a module belongs to: its subpackage (`noisear_rl.envs`, every
    embedded world counted as `noisear_rl.worlds`), or a top-level module itself."""
    if module == WORLD_INFO or module.startswith(WORLD_INFO + "."):
        return WORLD_INFO
    return ".".join(module.split(".")[:2])


def imported(path: Path) -> Iterator[str]:
    """The project modules `path` imports (function-level imports included, `if TYPE_CHECKING:`
    blocks left out: they never run)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for statement in node.body
        for child in ast.walk(statement)
    }
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, dict[str, set[str]]]:
    """layer -> layer it imports -> the modules whose imports make that edge."""
    graph: dict[str, dict[str, set[str]]] = {}
    for module, path in modules():
        source = layer(module)
        for name in imported(path):
            if name.startswith("noisear_rl.") and (target := layer(name)) != source:
                graph.setdefault(source, {}).setdefault(target, set()).add(module)
    return graph


def find_cycle(graph: dict[str, dict[str, set[str]]]) -> list[str] | None:
    """A cycle of layers, or None (depth-first search)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, {})):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_module_is_over_400_lines() -> None:
    too_long = {
        str(path.relative_to(PACKAGE)): lines for _, path in modules() if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}; split them"


def test_layers_import_only_downward() -> None:
    graph = import_graph()
    cycle = find_cycle(graph)
    if cycle:
        edges = [f"{a} -> {b} (in {', '.join(sorted(graph[a][b]))})" for a, b in zip(cycle, cycle[1:])]
        raise AssertionError("import cycle between layers:\n" + "\n".join(edges))


def test_generic_layers_reach_worlds_only_by_name() -> None:
    graph = import_graph()
    into_worlds = {source: sorted(edges["noisear_rl.worlds"]) for source, edges in graph.items() if "noisear_rl.worlds" in edges}
    assert not into_worlds, f"only worlds/ may import a world (others name it lazily, by string): {into_worlds}"
    assert WORLD_INFO not in graph, f"{WORLD_INFO} must import nothing of the project: {graph.get(WORLD_INFO)}"
    # worlds/ sits above the layers it uses like any plug-in.
    assert {"noisear_rl.pipelines", "noisear_rl.reward_models"} <= set(graph["noisear_rl.worlds"])


def test_the_graph_sees_the_imports() -> None:
    """The checks above are not vacuous: known edges are found, and a cycle is reported."""
    graph = import_graph()
    assert "noisear_rl.pipelines" in graph["noisear_rl.envs"] and WORLD_INFO in graph["noisear_rl.pipelines"]
    assert find_cycle({"a": {"b": set()}, "b": {"c": set()}, "c": {"a": set()}}) == ["a", "b", "c", "a"]
