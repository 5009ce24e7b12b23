"""The architecture's rules: app imports meta_core, never the reverse; test files mirror the
modules they test; no test module imports another's helpers (shared ones are in tests/utils); no
function runs on for pages."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Test files whose subject is not one module: the shipped artifacts (models/), the CLI of
# ``python -m app`` (app/__main__.py) and this file.
NOT_A_MODULE = {"test_layout.py", "meta_core/test_shipped.py", "app/test_cli.py"}


def imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_meta_core_never_imports_app():
    offenders = [
        f"{path.name}: {name}"
        for path in (ROOT / "meta_core").rglob("*.py")
        for name in imports(path)
        if name.split(".")[0] == "app"
    ]
    assert offenders == []


def test_test_files_mirror_modules():
    strays = []
    for path in (ROOT / "tests").rglob("test_*.py"):
        rel = path.relative_to(ROOT / "tests").as_posix()
        if rel in NOT_A_MODULE:
            continue
        parent, name = rel.rsplit("/", 1)
        module = ROOT / parent / name.removeprefix("test_")
        # A module (app/crud.py), a package, or a folder of files (migrations/versions).
        if not (module.exists() or module.with_suffix("").is_dir()):
            strays.append(rel)
    assert strays == []


def test_no_test_module_imports_another():
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / "tests").rglob("*.py")
        for name in imports(path)
        if name.startswith("tests.") and not name.startswith(("tests.utils", "tests.conftest"))
    ]
    assert offenders == []


MAX_FUNCTION_LINES = 60


def test_no_function_is_longer_than_its_reason_allows():
    """A function over MAX_FUNCTION_LINES is usually several steps waiting for names: each
    one in app/ and meta_core/ is either shorter or says why in its docstring ("Long: ...")."""
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)"
        for package in ("app", "meta_core")
        for path in (ROOT / package).rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (length := (node.end_lineno or node.lineno) - node.lineno + 1) > MAX_FUNCTION_LINES
        and "Long: " not in (ast.get_docstring(node) or "")
    ]
    assert long == []
