"""The checkpoint modules and peft_model import one way: checkpoint -> peft_model -> checkpoint_files."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "adapterlib"
MODULES = ("checkpoint", "checkpoint_files", "peft_model")


@pytest.mark.slow
@pytest.mark.parametrize(
    "first", ["adapterlib.checkpoint", "adapterlib.peft_model", "adapterlib.checkpoint_files"]
)
def test_each_module_imports_first_in_a_fresh_interpreter(first):
    code = (
        f"import {first}\n"
        "from adapterlib.checkpoint import load_adapter, save_adapter, add_checksum, DifferentBaseWarning\n"
        "from adapterlib.peft_model import PeftModel, get_peft_model, load_adapter as from_peft_model\n"
        "import adapterlib\n"
        "assert adapterlib.load_adapter is load_adapter is from_peft_model\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent, timeout=300
    )
    assert result.returncode == 0, result.stderr


def inside(tree: ast.AST, kind) -> set[int]:
    """The ids of the nodes below any node ``kind(node)`` accepts."""
    return {id(node) for outer in ast.walk(tree) if kind(outer) for node in ast.walk(outer)}


def imports_of(module: str) -> list[tuple[str, bool]]:
    """(the imported module, whether the import sits inside a function) for each relative import that
    runs (those under ``if TYPE_CHECKING:`` are for type checkers only)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    in_function = inside(tree, lambda node: isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))
    typing_only = inside(
        tree, lambda node: isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    )
    return [
        (node.module or "", id(node) in in_function)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1 and id(node) not in typing_only
    ]


@pytest.mark.parametrize("module", MODULES)
def test_no_import_between_the_three_modules_hides_in_a_function(module):
    late = [name for name, in_function in imports_of(module) if in_function and name in MODULES]
    assert not late, f"adapterlib/{module}.py imports {late} inside a function"


def test_the_lower_modules_never_import_the_higher_ones():
    assert "peft_model" not in [name for name, _ in imports_of("checkpoint_files")]
    assert "checkpoint" not in [name for name, _ in imports_of("peft_model")]
    assert "checkpoint" not in [name for name, _ in imports_of("checkpoint_files")]
