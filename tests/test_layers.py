"""Data flows one way: request → pipeline → task → engine → escalation → log. No module imports a
package above its own layer (imports inside functions and under TYPE_CHECKING count too), and the
packages of one layer do not import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import workhorse

# Lowest first. A package may import its own modules and any package of a lower layer.
LAYERS: list[set[str]] = [
    {"errors", "paths"},
    {"engine", "models", "privacy", "calllog", "datafile"},
    {"logparse", "evals"},
    {"tasks"},
    {"escalation"},
    {"pipeline"},
    {"flywheel"},  # training from the log; `bench flywheel` measures it
    {"serve"},  # with the console (serve/console)
    {"bench", "scale"},  # benchmarks measure the server too; Ray runs the pipeline and the server
    {"cli"},
]
LAYER_OF = {package: level for level, packages in enumerate(LAYERS) for package in packages}
SOURCE = Path(workhorse.__file__).parent


def _package(path: Path) -> str:
    relative = path.relative_to(SOURCE)
    return relative.parts[0].removesuffix(".py")


def _imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "workhorse" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_package_has_a_layer():
    packages = {_package(p) for p in SOURCE.rglob("*.py") if p.name != "__init__.py" or p.parent != SOURCE}
    assert packages - {"__main__"} <= set(LAYER_OF), f"add {packages - set(LAYER_OF)} to LAYERS"


def test_no_module_imports_upward_or_sideways():
    problems = []
    for path in sorted(SOURCE.rglob("*.py")):
        if path.parent == SOURCE and path.name == "__init__.py":
            continue
        package = _package(path)
        for imported in _imported_packages(path) - {package}:
            if imported not in LAYER_OF:
                continue  # e.g. `from workhorse import __version__`
            if LAYER_OF[imported] >= LAYER_OF[package]:
                problems.append(f"{path.relative_to(SOURCE)} ({package}) imports {imported}")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The walk finds imports in functions and TYPE_CHECKING blocks (so the test above can fail)."""
    module = tmp_path / "m.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from workhorse.pipeline import Pipeline\n"
                      "def f():\n    import workhorse.serve.app\n")
    assert _imported_packages(module) == {"pipeline", "serve"}
