"""The architecture's one rule: app imports meta_core; meta_core never imports app."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_meta_core_never_imports_app():
    offenders = []
    for path in (ROOT / "meta_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "app"]
    assert offenders == []
