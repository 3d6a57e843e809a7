"""The house rules, checked on the source: one folder per concern with imports running one way (see MAY_IMPORT),
every command in clipdiff/commands or clipdiff/training, no test imports another test module, no benchmark imports
the tests, and every function and module stays short enough to read. One test per rule; each checks every file and
lists all its offenders in one failure message."""
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


# The folders of clipdiff/, one concern each; the modules directly in clipdiff/ are the core.
FOLDERS = ("app", "commands", "serving", "testing", "training")
# Which layers a layer's modules may import besides its own: commands -> training -> core, app -> serving -> core.
MAY_IMPORT = {
    "core": set(),                                            # never the app, a command, training, serving or testing
    "serving": {"core"},                                      # the model tier the app samples through
    "training": {"core"},                                     # never a command or the app
    "app": {"core", "serving"},                               # never training, a command or the testing helpers
    "commands": {"core", "training"},                         # eval-gen's yardstick is training's
    "testing": {"core", "serving", "training", "app"},        # tiny models (train_clip's export), the live app
}
EXCEPTIONS = {("commands/bench.py", "testing")}              # bench times a live app, started the way the tests do


def layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if parts[0] in FOLDERS else "core"


def layer_of_module(name: str) -> str | None:
    """The layer of an imported module name (None: not clipdiff's)."""
    parts = name.split(".")
    if parts[0] != "clipdiff":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in FOLDERS else "core"


def reaches(modules: set[str], prefix: str) -> bool:
    return any(m == prefix or m.startswith(prefix + ".") for m in modules)


@pytest.fixture(scope="module")
def package_imports() -> dict[Path, set[str]]:
    """What each of clipdiff's files imports, parsed once for all the rules below."""
    return {path: imported_modules(path) for path in python_files(PACKAGE)}


def offenders(found: list[str], rule: str) -> str:
    return f"{rule}; {len(found)} offender(s):\n  " + "\n  ".join(found)


def test_imports_run_one_way(package_imports):
    """Each layer imports only the layers MAY_IMPORT names (and itself), so app -> serving -> core and
    commands -> training -> core."""
    wrong = []
    for path, modules in package_imports.items():
        own = layer(path)
        allowed = MAY_IMPORT[own] | {own} | {to for where, to in EXCEPTIONS if PACKAGE / where == path}
        bad = sorted(m for m in modules if layer_of_module(m) not in (None, *allowed))
        if bad:
            wrong.append(f"{path.relative_to(ROOT)} ({own} may import {sorted(MAY_IMPORT[own])}): {bad}")
    assert wrong == [], offenders(wrong, "imports must run one way")


def test_only_the_app_and_testing_import_gradio(package_imports):
    """Core, serving, training and the commands run without gradio installed."""
    wrong = [str(path.relative_to(ROOT)) for path, modules in package_imports.items()
             if layer(path) in ("core", "serving", "training", "commands") and reaches(modules, "gradio")]
    assert wrong == [], offenders(wrong, "only the app (and the testing helpers) import gradio")


def test_app_limits_is_gradio_free(package_imports):
    """app/limits.py holds every bound the app enforces, read by the checks, the controls and the tests alike, so it
    imports neither gradio nor the app's context."""
    modules = package_imports[PACKAGE / "app" / "limits.py"]
    assert not reaches(modules, "gradio") and not reaches(modules, "clipdiff.app.context"), "gradio-free"


def test_every_command_is_a_main_in_commands_or_training():
    """python -m clipdiff COMMAND runs a function of a module in clipdiff/commands or clipdiff/training."""
    from clipdiff.__main__ import COMMANDS

    for name, (target, _) in COMMANDS.items():
        module, _, function = target.partition(":")
        assert layer_of_module(module) in ("commands", "training"), f"{name}: {module} is not a command's module"
        source = ROOT.joinpath(*module.split(".")).with_suffix(".py")
        defined = {node.name for node in ast.parse(source.read_text(encoding="utf-8")).body
                   if isinstance(node, ast.FunctionDef)}
        assert (function or "main") in defined, f"{name}: {module} has no {function or 'main'}()"


def test_no_test_or_benchmark_imports_a_test_module():
    """Tests and benchmarks share code through clipdiff.testing or conftest.py, never by importing a test file."""
    local = {p.stem for p in (ROOT / "tests").glob("*.py")}
    wrong = []
    for path in python_files(ROOT / "tests") + python_files(ROOT / "benchmarks"):
        shared = sorted({m.split(".")[0] for m in imported_modules(path)} & local)
        if shared:
            wrong.append(f"{path.relative_to(ROOT)} imports {shared}")
    assert wrong == [], offenders(wrong, "share it through clipdiff.testing or conftest.py")


def test_functions_and_modules_stay_readable():
    """No module of clipdiff over MAX_MODULE_LINES lines, no function over MAX_FUNCTION_LINES."""
    wrong = []
    for path in python_files(PACKAGE):
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(ROOT)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            wrong.append(f"{where}: {len(text.splitlines())} lines (at most {MAX_MODULE_LINES})")
        wrong += [f"{where}: {node.name} ({node.end_lineno - node.lineno + 1} lines, at most {MAX_FUNCTION_LINES})"
                  for node in ast.walk(ast.parse(text))
                  if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert wrong == [], offenders(wrong, "keep functions and modules short enough to read")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_two_modules_import_each_other():
    """No import circle among clipdiff's modules, counting imports inside functions too: a circle means two modules
    share an idea that belongs in a third (as SamplerOptions did, serving/backend.py <-> serving/ray_sampler.py)."""
    modules = {module_name(p): p for p in python_files(PACKAGE)}
    graph = {name: sorted({m for m in imported_modules(path) if m in modules and m != name and
                           not name.startswith(m + ".")})      # a package's __init__ runs first: not an edge back
             for name, path in modules.items()}
    done, path = set(), []

    def visit(name: str) -> list[str] | None:
        if name in path:
            return path[path.index(name):] + [name]
        if name in done:
            return None
        path.append(name)
        for other in graph[name]:
            circle = visit(other)
            if circle:
                return circle
        path.pop()
        done.add(name)
        return None

    for name in sorted(graph):
        circle = visit(name)
        assert circle is None, " -> ".join(circle)
