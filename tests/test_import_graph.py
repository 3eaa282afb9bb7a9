"""The modules of ``aug_attn_tasks`` import each other without circles.

The graph is read from the source with ``ast``: every ``import`` and ``from ... import`` statement,
at module level or inside a function (a lazy import only postpones a circle to the first call),
with relative imports resolved. ``from package import name`` points at the submodule
``package.name`` when there is one, else at the package. Importing a submodule does not count as
importing its parent package's ``__init__``: a package that re-exports its own submodules would
otherwise close a circle with each of them that Python handles without harm. The task registry
loads modules by name (``importlib``): its edges are added from its table, so a task module that
imports the registry back shows up as a circle too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "aug_attn_tasks"


def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``package`` (packages by their ``__init__``)."""
    files = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imported_modules(name: str, path: Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that the file of module ``name`` imports, anywhere in it."""
    is_package = path.name == "__init__.py"
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, one level up per extra dot
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                targets.add(submodule if submodule in modules else source)
    found = set()
    for target in targets:  # `import a.b.c` of a name that is an attribute, not a file: the longest module prefix
        parts = target.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in modules:
                found.add(".".join(parts[:end]))
                break
    return found - {name}


def registry_edges(modules: set[str]) -> dict[str, set[str]]:
    """The registry's imports by name: every role module of every task package that exists."""
    from aug_attn_tasks import registry

    loaded = {f"{package}.{role}" for package in registry.TASKS.values() for role in registry.ROLES}
    return {registry.__name__: loaded & modules}


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    files = module_files(root, package)
    graph = {name: imported_modules(name, path, set(files)) for name, path in files.items()}
    for name, targets in registry_edges(set(files)).items():
        graph[name] |= targets
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle through each strongly connected component of more than one module (Tarjan), as
    ``[a, b, ..., a]``, so a failure names a path to follow."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_circle(graph, set(component)) for component in components]


def _circle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest circle from the first module of ``component`` back to itself, inside it."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    return paths[node] + [start]
                if target not in paths:
                    paths[target] = paths[node] + [target]
                    following.append(target)
        frontier = following
    return sorted(component)


def test_the_finder_names_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "one.py").write_text("def f():\n    from pkg.sub import two\n")
    (package / "sub" / "two.py").write_text("from .one import f\n")
    graph = {name: imported_modules(name, path, set(module_files(tmp_path, "pkg"))) for name, path in module_files(tmp_path, "pkg").items()}
    assert graph["pkg.sub.one"] == {"pkg.sub.two"} and graph["pkg.sub.two"] == {"pkg.sub.one"}
    assert find_cycles(graph) == [["pkg.sub.one", "pkg.sub.two", "pkg.sub.one"]]


def test_aug_attn_tasks_has_no_import_circles():
    graph = import_graph()
    assert "aug_attn_tasks.cli" in graph and len(graph) > 30, sorted(graph)  # the package was read
    cycles = find_cycles(graph)
    assert not cycles, "import circles in aug_attn_tasks:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)
