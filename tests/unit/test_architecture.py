"""The layout's rules, checked on the source (README "How it works"): each folder a layer and imports pointing
down only; front ends through the runner; model families known only in models/; modules and functions small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "negprompt_demo"
# A layer may import its own and lower layers only. Front ends: the page, the CLI; tools measure the embedded model.
LAYERS = {
    "syntax": 0,
    "embedded": 1,
    "settings": 1,
    "fields": 1,
    "models": 2,
    "sampling": 3,
    "views": 4,
    "runner": 4,
    "page": 5,
    "cli": 5,
    "__main__": 5,
    "__init__": 5,  # the public one-liner, negprompt_demo.compare
    "embedded_tools": 5,
}
FRONT_ENDS = ("page", "cli", "__main__", "__init__")
FRONT_END_MAY_IMPORT = {"runner", "settings", "views", "page", "cli"}
FAMILY_NAMES = {"sd", "sdxl", "sd3", "flux", "flux-schnell"}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def modules() -> list[tuple[str, Path, ast.Module]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        found.append((relative.parts[0].removesuffix(".py"), path, ast.parse(path.read_text(encoding="utf-8"))))
    return found


def imported_layers(tree: ast.Module) -> set[str]:
    """The top-level parts of negprompt_demo each import names, lazy imports inside functions included."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("negprompt_demo."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("negprompt_demo."))
    return names


@pytest.mark.parametrize(("layer", "path", "tree"), modules(), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_imports_point_down(layer, path, tree):
    upward = {name for name in imported_layers(tree) if LAYERS[name] > LAYERS[layer]}
    assert not upward, f"{path.relative_to(PACKAGE)} ({layer}) imports the higher layer(s) {sorted(upward)}"


def test_front_ends_import_only_the_runner_settings_and_views():
    for layer, path, tree in modules():
        if layer in FRONT_ENDS:
            other = imported_layers(tree) - FRONT_END_MAY_IMPORT
            assert not other, f"{path.relative_to(PACKAGE)} goes around the runner: it imports {sorted(other)}"


def test_no_family_name_is_compared_outside_models():
    """Code outside models/ asks a family's adapter (models.families) what it does, never its name."""
    for layer, path, tree in modules():
        if layer == "models":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                constants = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)]
                named = FAMILY_NAMES.intersection(c for c in constants if isinstance(c, str))
                assert not named, f"{path.relative_to(PACKAGE)}:{node.lineno} compares a family name {named}"


def test_modules_and_functions_stay_small():
    for _, path, tree in modules():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= MAX_MODULE_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines"
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= MAX_FUNCTION_LINES, f"{path.relative_to(PACKAGE)}:{node.name} has {length} lines"


def test_the_rules_catch_what_they_name():
    """The checks themselves: an upward import, a front end around the runner and a family comparison are seen."""
    source = (
        "from negprompt_demo.page.app import x\ndef f():\n    from negprompt_demo.models import y\nif f == 'sdxl': pass"
    )
    tree = ast.parse(source)
    assert imported_layers(tree) == {"page", "models"}  # the lazy import inside a function too
    compare = next(n for n in ast.walk(tree) if isinstance(n, ast.Compare))
    assert FAMILY_NAMES.intersection(n.value for n in ast.walk(compare) if isinstance(n, ast.Constant))
