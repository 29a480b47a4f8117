"""The layers import downwards only (pipelines -> model -> train -> deploy -> tools), deploy's parts too
(its shared contracts -> export -> serving -> front ends -> its command line), and no two modules import each other
through any chain: read statically from every module's imports, at module level and inside functions alike."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The repository's folders as the package maps them (pyproject.toml), lowest layer first.
LAYERS = ("pipelines", "model", "train", "deploy", "tools")
PACKAGES = (*LAYERS, "triton_repo")  # triton_repo: the served models' sources, which use deploy as tools do
# Within deploy: the contracts every part shares (deploy/*.py), then export, serving, the front ends, the commands.
DEPLOY_PARTS = ("", "export", "serving", "frontends", "cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(("qslr", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))}


def _imports(path: Path, known: set[str]) -> set[str]:
    """The QSLR modules ``path`` imports anywhere in it (a name imported from a package counts as its submodule
    where there is one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                      for alias in node.names}
    return {name for name in found if name in known}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}


def _layer(module: str) -> int:
    package = module.split(".")[1]
    return LAYERS.index(package) if package in LAYERS else len(LAYERS) - 1


def _deploy_part(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 3 and parts[2] != "cli":
        return 0  # deploy/*.py: tensor and model names, served limits, the served model and video decoder
    return DEPLOY_PARTS.index(parts[2])


def test_the_graph_is_read():
    graph = _graph()
    # Anti-vacuity: the walk finds the modules and their imports, function-level ones included.
    assert len(graph) > 100 and sum(map(len, graph.values())) > 300
    assert "qslr.deploy.serving.server" in graph["qslr.deploy.cli"]  # imported inside the serve command


@pytest.mark.parametrize("rule", ["layers", "deploy parts"])
def test_no_module_imports_a_higher_layer(rule):
    graph = _graph()
    if rule == "layers":
        upward = [(a, b) for a, targets in graph.items() for b in targets if _layer(b) > _layer(a)]
    else:
        deploy = {m for m in graph if m.startswith("qslr.deploy.")}
        upward = [(a, b) for a in deploy for b in graph[a] & deploy if _deploy_part(b) > _deploy_part(a)]
    assert not upward, "\n".join(f"{a} imports {b}" for a, b in sorted(upward))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "\n".join(" <-> ".join(cycle) for cycle in cycles)
