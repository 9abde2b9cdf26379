"""``python -m adapterlib check-setup`` on a good and on broken environments, in subprocesses."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapterlib import cli, setup_check

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sst2_folder(tmp_path) -> Path:
    """A tiny GLUE-format SST-2 folder: enough for the check, which reads every row."""
    folder = tmp_path / "sst2"
    folder.mkdir()
    (folder / "train.tsv").write_text("sentence\tlabel\na fine film\t1\na dull mess\t0\n")
    (folder / "dev.tsv").write_text("sentence\tlabel\nfunny\t1\n")
    return folder


def check_setup(environment: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **environment}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH_FIRST", ""), str(ROOT)]))
    return subprocess.run(
        [sys.executable, "-m", "adapterlib", "check-setup"],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def lines_starting(output: str, status: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(status)]


def test_a_good_environment_passes(sst2_folder, tmp_path):
    finished = check_setup({"ADAPTERLIB_SST2_DIR": str(sst2_folder)}, tmp_path)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert not lines_starting(finished.stdout, "FAIL")
    assert "2 training and 1 validation sentences" in finished.stdout
    assert "JupyterLab 4." in finished.stdout and "ipywidgets extension" in finished.stdout
    assert "model packaged:all-MiniLM-L6-v2 loads (22.7M parameters)" in finished.stdout
    assert "Chromium is not needed" in finished.stdout


def test_a_broken_environment_fails_with_what_to_do(sst2_folder, tmp_path):
    """A relative data folder, and jupyterlab_widgets made unimportable by a module that shadows it."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "jupyterlab_widgets.py").write_text("raise ImportError('shadowed for the test')\n")
    finished = check_setup(
        {"ADAPTERLIB_SST2_DIR": sst2_folder.name, "PYTHONPATH_FIRST": str(shadow)}, sst2_folder.parent
    )
    assert finished.returncode == 1
    failures = lines_starting(finished.stdout, "FAIL")
    assert len(failures) == 2, finished.stdout
    assert "is relative" in failures[0] and "before Jupyter started" in failures[0]
    assert "jupyterlab_widgets" in failures[1] and "pip install" in failures[1]
    assert "2 required check(s) failed." in finished.stdout


def test_the_data_folder_is_checked(sst2_folder, tmp_path, monkeypatch):
    monkeypatch.delenv("ADAPTERLIB_SST2_DIR", raising=False)
    assert setup_check.check_data().status == "FAIL"
    monkeypatch.setenv("ADAPTERLIB_SST2_DIR", str(tmp_path / "nowhere"))
    missing = setup_check.check_data()
    assert missing.status == "FAIL" and "does not exist" in missing.text
    (sst2_folder / "dev.tsv").unlink()
    monkeypatch.setenv("ADAPTERLIB_SST2_DIR", str(sst2_folder))
    incomplete = setup_check.check_data()
    assert incomplete.status == "FAIL" and "has no dev.tsv" in incomplete.text


def test_torch_outside_the_supported_range_fails(monkeypatch):
    import torch

    monkeypatch.setattr(torch, "__version__", "2.3.1+cpu")
    assert setup_check.check_torch().status == "FAIL"
    monkeypatch.setattr(torch, "__version__", "2.13.0+cpu")
    assert setup_check.check_torch().status == "ok"


def test_arguments_are_refused(capsys):
    assert setup_check.main(["--fix"]) == 2
    assert "takes no arguments" in capsys.readouterr().err
    assert cli.main(["check-setup", "--fix"]) == 2
    assert capsys.readouterr().err.startswith("adapterlib check-setup: error: unrecognized arguments: --fix")


def test_check_setup_is_a_command_of_the_cli(capsys):
    """Listed with the other commands, with its own usage, and running the checks."""
    assert cli.main(["--help"]) == 0
    assert "check-setup         check that this machine is ready" in capsys.readouterr().out
    assert cli.main(["check-setup", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: adapterlib check-setup [-h]")
