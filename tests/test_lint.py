"""The tree stays lint-clean and formatted: ruff's findings fail the test command (settings in pyproject.toml)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff_finds_nothing(command: list[str]) -> None:
    ruff = shutil.which("ruff")
    assert ruff, "ruff is not installed: pip install -r requirements.txt -c constraints.txt"
    result = subprocess.run([ruff, *command], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, (
        f"ruff {' '.join(command)} found problems (run it to fix):\n{result.stdout}{result.stderr}"
    )
