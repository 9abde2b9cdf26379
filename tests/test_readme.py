"""The README's commands work as written: CI runs exactly them, and every example runs offline.

A fenced block is tagged by the HTML comment on the line above it:
``<!-- ci: install -->`` and ``<!-- ci: test -->`` are what ``.ci/run`` must consist of;
``<!-- example -->`` is run here, in a temporary folder laid out like the course machines
(the project in ``work/``, the SST-2 folder at ``../shared/data/sst2``, the other tasks at
``../shared/data/senteval``);
``<!-- example: skip (reason) -->`` is skipped with that reason (a server, or hours of training).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
TAGGED_BLOCK = re.compile(r"<!-- (?P<tag>[^>]*?) -->\n```(?P<language>\w+)\n(?P<code>.*?)```", re.S)
BLOCKS = [(m["tag"], m["language"], m["code"]) for m in TAGGED_BLOCK.finditer(README)]
EXAMPLES = [(tag, language, code) for tag, language, code in BLOCKS if tag.startswith("example")]


def command_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_ci_is_the_readme_commands_verbatim():
    ci_blocks = {tag: code for tag, _, code in BLOCKS if tag.startswith("ci:")}
    assert set(ci_blocks) == {"ci: install", "ci: test"}, f"README's CI blocks: {sorted(ci_blocks)}"
    expected = command_lines(ci_blocks["ci: install"]) + command_lines(ci_blocks["ci: test"])
    ci_script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    setup = ("set -euo pipefail", 'cd "$(dirname "$0")/.."')
    assert [line for line in command_lines(ci_script) if line not in setup] == expected


def test_every_example_is_tagged():
    fences = README.count("```") // 2
    assert len(BLOCKS) == fences, (
        "every fenced block in the README needs a <!-- ci: ... --> or <!-- example --> tag"
    )
    assert EXAMPLES, "the README has no runnable example"


@pytest.mark.parametrize(
    "tag, language, code", EXAMPLES, ids=[f"{i}-{lang}" for i, (_, lang, _) in enumerate(EXAMPLES)]
)
def test_readme_example_runs_as_written(tag, language, code, tmp_path):
    skip = re.fullmatch(r"example: skip \((.+)\)", tag)
    if skip:
        pytest.skip(skip[1])
    assert tag == "example", f"unknown tag {tag!r}"
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ADAPTERLIB_SST2_DIR", "ADAPTERLIB_DATA_ROOT")}
    (tmp_path / "shared" / "data").mkdir(parents=True)
    if "../shared/data/sst2" in code:
        data = os.environ.get("ADAPTERLIB_SST2_DIR")
        if not data:
            pytest.skip("needs the SST-2 folder: run pytest with --data-dir")
        (tmp_path / "shared" / "data" / "sst2").symlink_to(data)
    if "../shared/data/senteval" in code:
        root = os.environ.get("ADAPTERLIB_DATA_ROOT")
        if not root:
            pytest.skip("needs the tasks' folder: run pytest with --data-dir=../shared/data/sst2")
        (tmp_path / "shared" / "data" / "senteval").symlink_to(Path(root) / "senteval")
    runner = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
    result = subprocess.run(runner, cwd=work, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, (
        f"example failed:\n{code}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )
    assert "Traceback" not in result.stderr
