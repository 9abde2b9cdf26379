"""Settings for the whole test run: the SST-2 folder, and caches kept out of the home folder.

``--data-dir=PATH`` names the GLUE-format SST-2 folder (``train.tsv``, ``dev.tsv``); with ``=``, because
pytest takes a bare path argument for a folder of tests (and looks for its configuration there). A relative path
is resolved against the directory pytest was started in, then handed on as an absolute
``$ADAPTERLIB_SST2_DIR``, so the notebooks' kernels (which start inside ``notebooks/``) and the
command-line tests find the same folder. Without the option, an existing ``$ADAPTERLIB_SST2_DIR``
is used the same way; without either, the tests that need SST-2 read it from the hub.

Everything a run writes besides temporary folders goes under ``test-artifacts/`` (git-ignored):
the junit report, and the datasets, matplotlib, IPython and Jupyter caches that would otherwise
land in the home folder.

Under CI (``$CI`` is ``true``) a skipped browser test (``tests/test_browser*.py``, which skip where
Chromium or Playwright is missing) is reported as a failure: CI must prove the explorers work.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_DIR_VARIABLE = "ADAPTERLIB_SST2_DIR"
CACHES = {
    "HF_DATASETS_CACHE": "datasets",
    "MPLCONFIGDIR": "matplotlib",
    "IPYTHONDIR": "ipython",
    "JUPYTER_CONFIG_DIR": "jupyter/config",
    "JUPYTER_DATA_DIR": "jupyter/data",
    "JUPYTER_RUNTIME_DIR": "jupyter/runtime",
    "JUPYTERLAB_SETTINGS_DIR": "jupyter/lab-settings",
    "JUPYTERLAB_WORKSPACES_DIR": "jupyter/lab-workspaces",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--data-dir",
        metavar="PATH",
        help=(
            "GLUE-format SST-2 folder (train.tsv, dev.tsv); relative to where pytest starts. Default: "
            f"${DATA_DIR_VARIABLE}, else the hub."
        ),
    )


def pytest_configure(config: pytest.Config) -> None:
    started_in = Path(config.invocation_params.dir)
    chosen = config.getoption("data_dir") or os.environ.get(DATA_DIR_VARIABLE)
    if chosen:
        folder = (started_in / chosen).resolve()
        if not folder.is_dir():
            raise pytest.UsageError(
                f"--data-dir: {chosen} (resolved to {folder}) is not a folder; name the SST-2 folder "
                "holding train.tsv and dev.tsv."
            )
        os.environ[DATA_DIR_VARIABLE] = str(folder)

    artifacts = Path(config.rootpath) / "test-artifacts"
    for variable, subfolder in CACHES.items():
        if variable not in os.environ:
            (artifacts / subfolder).mkdir(parents=True, exist_ok=True)
            os.environ[variable] = str(artifacts / subfolder)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.skipped and os.environ.get("CI") == "true" and item.path.name.startswith("test_browser"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"a browser test may not be skipped in CI: {reason}"
    return report
