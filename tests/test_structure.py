"""The package's shape: no import cycles (type-only imports included), no module over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The installed layout: sddpx_tp/ is the package, export/ is installed as sddpx_tp.export.
SOURCES = {"sddpx_tp": ROOT / "sddpx_tp", "sddpx_tp.export": ROOT / "export"}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Every module of the package that ``path`` imports, anywhere in the file (functions and
    ``if TYPE_CHECKING`` blocks too): a cycle through a type-only import is still a cycle."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    resolved = set()
    for target in targets:
        # `from sddpx_tp import __version__` is the package's own __init__, not a cycle through it;
        # a name inside a module resolves to that module.
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != module and target != "sddpx_tp":
            resolved.add(target)
    return resolved


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], dict.fromkeys(graph, 0), []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state[target] == 1:
                found.append([*stack[stack.index(target) :], target])
            elif state[target] == 0:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if state[node] == 0:
            visit(node)
    return found


def test_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_is_read_from_the_sources() -> None:
    modules = _modules()
    graph = {name: _imports(path, name, set(modules)) for name, path in modules.items()}
    # Facts any reader can check in the files: the CLI calls the workflow, the workflow calls prune.
    assert "sddpx_tp.run.workflow" in graph["sddpx_tp.cli.prune"]
    assert "sddpx_tp.api" in graph["sddpx_tp.run.workflow"]
    assert "sddpx_tp.export.onnx" in graph["sddpx_tp.export.bench"]


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = {name: _imports(path, name, set(modules)) for name, path in modules.items()}
    assert _cycles(graph) == []


def test_the_library_never_imports_the_command_line() -> None:
    modules = _modules()
    for name, path in modules.items():
        if not name.startswith("sddpx_tp.cli"):
            assert not any(target.startswith("sddpx_tp.cli") for target in _imports(path, name, set(modules))), name


def test_no_module_over_400_lines() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {name: lines for name, lines in sizes.items() if lines > 400} == {}


# The floors of the pipeline, bottom up: a module may import its own floor and the floors below it,
# never one above (the floor plan in docs/architecture.md). Every module must be on a floor.
FLOORS = (
    ("sddpx_tp.errors", "sddpx_tp.files", "sddpx_tp.metrics", "sddpx_tp.environment", "sddpx_tp.text"),
    ("sddpx_tp.lrp", "sddpx_tp.export"),
    ("sddpx_tp.models",),
    ("sddpx_tp.data",),
    ("sddpx_tp.pruning",),
    ("sddpx_tp.api",),
    ("sddpx_tp.run",),
    ("sddpx_tp.sweep",),
    ("sddpx_tp.cli",),
)


def _floor(module: str) -> int:
    """The floor of a module: that of the longest prefix named in FLOORS (-1: on none). The package's
    ``__init__`` is the facade above them all: it names the public API of every floor."""
    if module == "sddpx_tp":
        return len(FLOORS)
    best, floor = "", -1
    for level, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, floor = prefix, level
    return floor


def test_floor_finder_places_modules_by_their_longest_prefix() -> None:
    assert _floor("sddpx_tp.pruning.session") == 4
    assert _floor("sddpx_tp.export.bench") == 1
    assert _floor("sddpx_tp.errors") == 0
    assert _floor("sddpx_tp.somewhere_new") == -1
    assert _floor("sddpx_tp") == len(FLOORS)


def test_every_module_is_on_a_named_floor() -> None:
    assert [name for name in _modules() if _floor(name) < 0] == []


def test_imports_only_point_down_the_floors() -> None:
    modules = _modules()
    upward = sorted(
        (name, target)
        for name, path in modules.items()
        for target in _imports(path, name, set(modules))
        if _floor(target) > _floor(name)
    )
    assert upward == []


def test_the_floor_plan_names_every_module() -> None:
    plan = (ROOT / "docs" / "architecture.md").read_text()
    missing = [
        str(path.relative_to(ROOT))
        for name, path in _modules().items()
        if path.name != "__init__.py"
        and f"`{path.name}`" not in plan
        and f"`{path.relative_to(ROOT)}`" not in plan
        and not name.startswith("sddpx_tp.cli.")  # the verbs are listed by name
    ]
    assert missing == []
