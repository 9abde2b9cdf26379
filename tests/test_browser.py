"""The r explorer in a real browser: JupyterLab on localhost, headless Chromium driven by Playwright.

Opens notebooks/07_explore_r.ipynb, runs it, moves the adapter's r slider one step with the keyboard
and checks that the table shows the adapter's count for the new r while LoRA's count stays, then
the same for LoRA's slider. The accuracy overlay is checked too: at the starting sizes, which the
comparison grid trained, the table shows the accuracy results/results.json records and the plot is
drawn; one step off, it says the size was not trained. Saves screenshots to test-artifacts/. The server, its
kernel and the
browser keep their state (workspaces, settings, history) in the test's temporary folder, never in
the home directory. Needs Debian's chromium (/usr/bin/chromium) and the playwright package;
.ci/run installs both.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from adapterlib import AdapterConfig, LoraConfig
from adapterlib.widgets import Count, count, model_shapes

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def requirements_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


@pytest.fixture
def jupyter_lab(tmp_path):
    """A JupyterLab server on a free localhost port, serving a copy of the explorer notebook."""
    missing = requirements_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run in CI: {missing}")
        pytest.skip(missing)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = "adapterlib-browser-test"
    served = tmp_path / "notebooks"
    served.mkdir()
    shutil.copy(ROOT / "notebooks" / "07_explore_r.ipynb", served)
    state = {
        name: tmp_path / name
        for name in ("runtime", "data", "ipython", "matplotlib", "workspaces", "user-settings")
    }
    environment = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(state["runtime"]),
        "JUPYTER_DATA_DIR": str(state["data"]),
        "IPYTHONDIR": str(state["ipython"]),
        "MPLCONFIGDIR": str(state["matplotlib"]),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--allow-root",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--ServerApp.token={token}",
            f"--ServerApp.root_dir={served}",
            "--LabApp.news_url=",
            f"--LabApp.workspaces_dir={state['workspaces']}",
            f"--LabApp.user_settings_dir={state['user-settings']}",
            "--ServerApp.disable_check_xsrf=True",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start within 60 s")
        yield base, token
    finally:
        server.terminate()
        server.wait(timeout=30)


def table_row(method: str, trainable: int) -> str:
    """How the explorer's table shows one method's trainable count, as the browser renders its text."""
    return f"{method}{trainable:,}"


def measured_row(method: str, shown: Count, accuracy: str) -> str:
    """A whole row of the table as the browser renders its text: count, fraction and measured accuracy."""
    return f"{method}{shown.trainable:,}{100 * shown.fraction:.3f}%{accuracy}"


def committed_accuracy(variant: str) -> str:
    """What results/results.json records for ``variant`` ("adapter r=16"), as "83.6 ± 1.0%"."""
    (row,) = [
        row
        for row in json.loads((ROOT / "results" / "results.json").read_text())["summary"]
        if row["variant"] == variant
    ]
    return f"{row['accuracy_mean']:.1f} ± {row['ci95_seeds']:.1f}%"


def run_all_cells(playwright, jupyter_lab, notebook: str, home: Path):
    """Chromium with a temporary profile, ``notebook`` opened in JupyterLab, every cell run; the
    browser and the page. HOME keeps chromium's crash-report and dconf folders in ``home`` too."""
    from playwright.sync_api import TimeoutError

    base, token = jupyter_lab
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_FLAGS, env={**os.environ, "HOME": str(home)}
    )
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{base}/lab/tree/{notebook}?token={token}")
    page.locator(".jp-Notebook").first.wait_for(timeout=60_000)
    try:
        page.get_by_role("button", name="Select", exact=True).click(timeout=20_000)
    except TimeoutError:
        pass  # no kernel dialog: the kernel started on its own
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()
    return browser, page


def test_each_r_slider_moves_its_own_count(jupyter_lab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    minilm = model_shapes()["MiniLM-L6 (packaged, d=384)"]
    adapter = {r: table_row("adapter", count(minilm, AdapterConfig(r=r)).trainable) for r in (16, 17)}
    lora = {r: table_row("LoRA", count(minilm, LoraConfig(r=r)).trainable) for r in (8, 9)}
    adapter_measured = {  # r = 16 was trained, r = 17 was not
        16: measured_row("adapter", count(minilm, AdapterConfig(r=16)), committed_accuracy("adapter r=16")),
        17: measured_row("adapter", count(minilm, AdapterConfig(r=17)), "not trained at this size"),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser, page = run_all_cells(playwright, jupyter_lab, "07_explore_r.ipynb", tmp_path)
        table = page.locator(".widget-html-content table").first
        try:
            expect(table).to_contain_text(adapter[16], timeout=120_000)
            expect(table).to_contain_text(lora[8])
            expect(table).to_contain_text(adapter_measured[16])  # the accuracy overlay: the measured value
            expect(table).to_contain_text(committed_accuracy("lora r=8"))
            expect(page.locator(".widget-output img").first).to_be_visible()  # the plot of curves and markers
        finally:
            page.screenshot(path=str(ARTIFACTS / "explorer-loaded.png"))
        for label, moved, kept in (("adapter r", adapter, lora[8]), ("LoRA r", lora, adapter[17])):
            slider = page.locator(f".widget-slider:has(label:text-is('{label}'))").first
            slider.locator(".noUi-handle").focus()
            page.keyboard.press("ArrowRight")
            new = max(moved)
            expect(slider.locator(".widget-readout")).to_have_text(str(new), timeout=30_000)
            expect(table).to_contain_text(moved[new], timeout=30_000)
            expect(table).to_contain_text(kept)
            if label == "adapter r":
                expect(table).to_contain_text(adapter_measured[17])  # off the trained sizes: no measurement
        adapter_slider = page.locator(".widget-slider:has(label:text-is('adapter r'))").first
        adapter_slider.locator(".noUi-handle").focus()
        page.keyboard.press("ArrowLeft")  # back onto a trained size, computed by the running kernel
        expect(adapter_slider.locator(".widget-readout")).to_have_text("16", timeout=30_000)
        expect(table).to_contain_text(adapter_measured[16], timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "explorer.png"), full_page=True)
        browser.close()
