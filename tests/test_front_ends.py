"""The front ends (page, CLI) reach the layers below only through the runner: they import `negprompt_demo.runner`,
`negprompt_demo.settings`, the drawing in `negprompt_demo.views` and their own modules, never a model or sampling
module (lazy imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "negprompt_demo"
FRONT_ENDS = sorted([*(PACKAGE / "page").glob("*.py"), PACKAGE / "cli.py", PACKAGE / "__main__.py"])
ALLOWED = ("negprompt_demo.runner", "negprompt_demo.settings", "negprompt_demo.views", "negprompt_demo.page")


def project_imports(path: Path) -> list[str]:
    """Every `negprompt_demo…` module a file imports, wherever the import statement stands."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return [name for name in names if name.split(".")[0] == "negprompt_demo"]


@pytest.mark.parametrize("path", FRONT_ENDS, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_a_front_end_imports_only_the_runner_settings_views_and_itself(path):
    below = [
        name
        for name in project_imports(path)
        if name != "negprompt_demo.cli" and not any(name == a or name.startswith(a + ".") for a in ALLOWED)
    ]
    assert not below, f"{path.name} goes around the runner: {below}"


def test_the_check_sees_lazy_imports(tmp_path):
    source = tmp_path / "front.py"
    source.write_text("def run():\n    from negprompt_demo.sampling.engine import prepare\n", encoding="utf-8")
    assert project_imports(source) == ["negprompt_demo.sampling.engine"]
