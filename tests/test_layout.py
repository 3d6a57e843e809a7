"""The house rules (issue 13), checked on the source: imports run one way (core <- app; testing may use both; the
core never imports the app or gradio), no test imports another test module, no benchmark imports the tests, and
every function and module stays short enough to read."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "clipdiff"
MAX_FUNCTION_LINES = 120
MAX_MODULE_LINES = 600


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports too), relative ones made absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if parts[0] in ("app", "testing") else "core"


def reaches(modules: set[str], prefix: str) -> bool:
    return any(m == prefix or m.startswith(prefix + ".") for m in modules)


@pytest.mark.parametrize("path", python_files(PACKAGE), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_one_way(path):
    modules = imported_modules(path)
    if layer(path) == "core":
        assert not reaches(modules, "clipdiff.app"), "the core never imports the app"
        assert not reaches(modules, "gradio"), "the core never imports gradio"
    if layer(path) == "app":
        assert not reaches(modules, "clipdiff.testing"), "the app never imports the testing helpers"
    if path == PACKAGE / "app" / "limits.py":
        assert not reaches(modules, "gradio") and not reaches(modules, "clipdiff.app.context"), "gradio-free"


@pytest.mark.parametrize("path", python_files(ROOT / "tests") + python_files(ROOT / "benchmarks"),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_test_or_benchmark_imports_a_test_module(path):
    local = {p.stem for p in (ROOT / "tests").glob("*.py")}
    modules = imported_modules(path)
    assert not {m.split(".")[0] for m in modules} & local, "share it through clipdiff.testing or conftest.py"


@pytest.mark.parametrize("path", python_files(PACKAGE), ids=lambda p: str(p.relative_to(ROOT)))
def test_functions_and_modules_stay_readable(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_MODULE_LINES
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []
