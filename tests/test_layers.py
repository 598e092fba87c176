"""Charter's modules import only from their own layer or below, with no cycles, and nothing
imports `charter.cli` (DESIGN.md's layer order). Every import counts, including those inside
functions (they run too, only later)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "charter"

# Lowest first; a module belongs to the first layer one of whose prefixes it starts with.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundation",
        (
            "charter",  # the package's __init__: nothing in it
            "charter.config",
            "charter.configs",
            "charter.model",
            "charter.heads",
            "charter.tokenizer",
            "charter.checkpoint",
            "charter.files",
            "charter.log",
            "charter.metrics",
            "charter.network",
        ),
    ),
    ("interop", ("charter.interop",)),
    ("chat", ("charter.chat",)),
    ("infer", ("charter.infer",)),
    ("tasks", ("charter.tasks",)),
    ("data", ("charter.data",)),
    ("train", ("charter.train",)),
    ("align, safety, eval", ("charter.align", "charter.safety", "charter.eval")),
    (
        "applications",
        (
            "charter.serve",
            "charter.terminal",
            "charter.commands",
            "charter.pipeline",
            "charter.report",
            "charter.redteam_loop",
            "charter.cli",
        ),
    ),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if module in prefixes or any(
            p != "charter" and module.startswith(p + ".") for p in prefixes
        ):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and DESIGN.md)")


def imports(path: Path) -> set[str]:
    """Every charter module `path` imports, anywhere in it, and the packages those imports run
    (importing a.b.c runs a/b/__init__.py) unless `path` is inside that package."""
    importer = module_name(path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("charter")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if not node.module.startswith("charter"):
                continue
            for alias in node.names:  # `from charter.infer import remote`: a module
                full = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*full.split("."))).with_suffix(".py").exists()
                found.add(full if is_module else node.module)
    packages = set()
    for module in found:
        parts = module.split(".")
        for n in range(2, len(parts)):
            package = ".".join(parts[:n])
            if not importer.startswith(package + ".") and importer != package:
                packages.add(package)
    return (found | packages) - {"charter", importer}


GRAPH = {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_is_in_a_layer():
    for module in GRAPH:
        layer_of(module)


def test_no_module_imports_from_a_higher_layer():
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in GRAPH.items()
        for target in sorted(targets)
        if target in GRAPH and layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_nothing_imports_the_cli():
    assert [m for m, targets in GRAPH.items() if "charter.cli" in targets] == []


def find_cycles(graph: dict[str, set[str]]) -> list[str]:
    """Each import cycle found by a depth-first walk, as `a -> b -> a`."""
    cycles: list[str] = []
    state: dict[str, str] = {}  # "visiting" | "done"

    def visit(module: str, path: list[str]) -> None:
        state[module] = "visiting"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "visiting":
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target in graph and target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])
    return cycles


def test_there_are_no_import_cycles():
    assert find_cycles(GRAPH) == []


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == ["a -> b -> c -> a"]


@pytest.mark.parametrize(
    ("module", "targets", "expected"),
    [
        ("charter.chat.render", {"charter.tokenizer"}, []),
        ("charter.tokenizer", {"charter.chat.template"}, ["charter.chat.template"]),
    ],
)
def test_the_layer_check_catches_an_upward_import(module, targets, expected):
    """The check itself can fail: a lower module importing a higher one is reported."""
    assert [t for t in sorted(targets) if layer_of(t) > layer_of(module)] == expected
