"""Every third-party import of ``aug_attn`` and ``aug_attn_tasks`` comes from a declared dependency.

A fresh machine has exactly what ``pyproject.toml`` declares (scipy, imported once by the tagging
metrics and installed here only by hand, broke both README commands there). So the imports of the
library and the recipes, at top level or inside functions, are read from the source and matched
to the distributions that provide them through the installed metadata
(``importlib.metadata.packages_distributions()``):
- a package of a runtime dependency may be imported anywhere;
- a package that only an extra provides must be imported through ``aug_attn.optional.import_extra``
  naming that extra, whose error tells the user what to install;
- anything else is a defect, named with its file and line.
The test suite's own imports must come from the runtime dependencies or the ``test`` extra.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from aug_attn.optional import MissingExtraError, import_extra

ROOT = Path(__file__).resolve().parents[1]
OWN = {"aug_attn", "aug_attn_tasks", "tests"}


@dataclass(frozen=True)
class Import:
    module: str  # the top-level name, e.g. "torch" for "from torch.nn import functional"
    where: str  # "path:line"
    extra: str | None  # the extra named by an import_extra(...) call; None for an import statement


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalize(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1))


def declared_dependencies() -> tuple[set[str], dict[str, set[str]]]:
    """``(runtime, {extra: distributions})`` from the checkout's ``pyproject.toml``, the file that a
    fresh install reads (on Python 3.10, without tomllib: from the installed metadata)."""
    try:
        import tomllib
    except ModuleNotFoundError:
        runtime, extras = set(), {}
        for requirement in importlib.metadata.requires("aug-attn") or []:
            marker = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
            target = extras.setdefault(marker.group(1), set()) if marker else runtime
            target.add(requirement_name(requirement))
        return runtime, extras
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {requirement_name(r) for r in project.get("dependencies", [])}
    extras = {name: {requirement_name(r) for r in reqs} for name, reqs in project.get("optional-dependencies", {}).items()}
    return runtime, extras


def _literal(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def collect_imports(folder: Path) -> list[Import]:
    """Every absolute import below ``folder`` (statements anywhere in a file, ``import_extra`` and
    ``importlib.import_module`` calls with literal names) as top-level module names, but for the
    folder's own modules."""
    found, local = [], {path.stem for path in folder.glob("*.py")}  # sibling modules (tests import their helpers)
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(folder.parent)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                found += [Import(alias.name.split(".")[0], where, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append(Import(node.module.split(".")[0], where, None))
            elif isinstance(node, ast.Call) and node.args and _literal(node.args[0]):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name == "import_extra":
                    extra = _literal(node.args[1]) if len(node.args) > 1 else None
                    found.append(Import(_literal(node.args[0]).split(".")[0], where, extra or "<not a literal>"))
                elif name == "import_module":
                    found.append(Import(_literal(node.args[0]).split(".")[0], where, None))
    return [imp for imp in found if imp.module not in local]


def audit(imports: list[Import], runtime: set[str], extras: dict[str, set[str]], providers: dict[str, list[str]]) -> list[str]:
    """The defects among ``imports``: one message per import that no declared dependency provides,
    or that takes an extra's package without ``import_extra`` naming that extra."""
    problems = []
    for imp in imports:
        if imp.module in sys.stdlib_module_names or imp.module in OWN:
            continue
        dists = {normalize(d) for d in providers.get(imp.module, [])}
        if not dists and imp.extra is not None:
            # An extra that this environment lacks (the test extra leaves out torch-cluster, which
            # compiles for minutes): its distribution is taken to be named like its module.
            dists = {normalize(imp.module)}
        owners = sorted(name for name, reqs in extras.items() if dists & reqs)
        if not dists:
            problems.append(f"{imp.where}: '{imp.module}' is provided by no installed distribution (undeclared?)")
        elif dists & runtime:
            continue
        elif not owners:
            problems.append(f"{imp.where}: '{imp.module}' comes from {sorted(dists)}, which no dependency or extra declares")
        elif imp.extra is None:
            problems.append(f"{imp.where}: '{imp.module}' belongs to the extra {owners}: import it with import_extra")
        elif imp.extra not in owners:
            problems.append(f"{imp.where}: import_extra names extra '{imp.extra}', but '{imp.module}' comes with {owners}")
    return problems


@pytest.fixture(scope="module")
def providers() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@pytest.mark.parametrize("package", ["aug_attn", "aug_attn_tasks"])
def test_every_import_of_the_package_is_declared(package, providers):
    runtime, extras = declared_dependencies()
    imports = collect_imports(ROOT / package)
    assert any(imp.module == "torch" for imp in imports)  # the collector sees the code
    assert audit(imports, runtime, extras, providers) == []


def test_the_test_suite_imports_only_runtime_and_test_packages(providers):
    runtime, extras = declared_dependencies()
    assert audit(collect_imports(ROOT / "tests"), runtime | extras["test"], {}, providers) == []


def test_the_audit_fails_without_a_declared_runtime_dependency(providers):
    """What the issue asked to try once by hand: drop a runtime dependency and the audit names its imports."""
    runtime, extras = declared_dependencies()
    for dropped in ("numpy", "torchmetrics", "pyyaml"):
        problems = audit(collect_imports(ROOT / "aug_attn_tasks"), runtime - {dropped}, extras, providers)
        assert problems and all("no dependency or extra declares" in p for p in problems), dropped


def test_the_audit_names_undeclared_and_unguarded_imports(tmp_path, providers):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text(
        "import numpy\n"
        "from definitely_not_installed_xyz import thing\n"
        "def lazy():\n"
        "    import h5py\n"
        "    return import_extra('h5py', 'export', 'reading')\n"
        "def absent():\n"
        "    return import_extra('not_installed_xyz', 'h5', 'reading'), import_extra('not_installed_xyz', 'xyz', 'x')\n"
    )
    extras = {"h5": {"h5py"}, "export": {"onnx"}, "xyz": {"not-installed-xyz"}}
    problems = audit(collect_imports(package), {"numpy"}, extras, providers)
    assert problems == [
        "pkg/mod.py:2: 'definitely_not_installed_xyz' is provided by no installed distribution (undeclared?)",
        "pkg/mod.py:4: 'h5py' belongs to the extra ['h5']: import it with import_extra",
        "pkg/mod.py:5: import_extra names extra 'export', but 'h5py' comes with ['h5']",
        # Not installed here: named like its module, so the extra 'xyz' provides it and 'h5' does not.
        "pkg/mod.py:7: import_extra names extra 'h5', but 'not_installed_xyz' comes with ['xyz']",
    ]


def test_every_extra_guard_names_its_extra(monkeypatch):
    _, extras = declared_dependencies()
    guarded = [imp for package in ("aug_attn", "aug_attn_tasks") for imp in collect_imports(ROOT / package) if imp.extra]
    assert {imp.extra for imp in guarded} >= {"h5", "export", "tensorboard", "viz", "cluster"}
    for imp in guarded:
        assert imp.extra in extras, f"{imp.where}: no extra '{imp.extra}' in pyproject.toml"
        monkeypatch.setitem(sys.modules, imp.module, None)  # makes the import fail as if absent
        with pytest.raises(MissingExtraError, match=re.escape(f'pip install -e ".[{imp.extra}]"')):
            import_extra(imp.module, imp.extra, "this feature")


def test_reading_h5_without_h5py_names_the_extra(tmp_path, monkeypatch):
    from aug_attn_tasks.points.datasets import _read_h5

    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(MissingExtraError, match=r"reading \.h5 point clouds needs .*\.\[h5\]"):
        _read_h5(tmp_path / "ply_data_train0.h5", None)
