"""The r explorer in a real browser: JupyterLab on localhost, headless Chromium driven by Playwright.

Opens notebooks/07_explore_r.ipynb, runs it, moves the r slider one step with the keyboard and
checks that the table shows the count for the new r. Saves a screenshot to test-artifacts/.
Needs Debian's chromium (/usr/bin/chromium) and the playwright package; .ci/run installs both.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from adapterlib import AdapterConfig
from adapterlib.widgets import count, model_shapes

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]


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
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={served}", "--LabApp.news_url=",
         "--ServerApp.disable_check_xsrf=True"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)},
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


def test_r_slider_moves_the_trainable_count(jupyter_lab):
    from playwright.sync_api import TimeoutError, expect, sync_playwright

    base, token = jupyter_lab
    minilm = model_shapes()["MiniLM-L6 (packaged, d=384)"]
    expected = {r: f"{count(minilm, AdapterConfig(r=r)).trainable:,}" for r in (16, 17)}
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{base}/lab/tree/07_explore_r.ipynb?token={token}")
        page.locator(".jp-Notebook").first.wait_for(timeout=60_000)
        select_kernel = page.get_by_role("button", name="Select", exact=True)
        try:
            select_kernel.click(timeout=20_000)
        except TimeoutError:
            pass  # no kernel dialog: the kernel started on its own
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_text("Run All Cells", exact=True).click()
        table = page.locator(".widget-html-content table").first
        try:
            expect(table).to_contain_text(expected[16], timeout=120_000)
        finally:
            page.screenshot(path=str(ARTIFACTS / "explorer-loaded.png"))
        handle = page.locator(".widget-slider:has(label:text-is('r')) .noUi-handle").first
        handle.focus()
        page.keyboard.press("ArrowRight")
        expect(table).to_contain_text(expected[17], timeout=30_000)
        slider_value = page.locator(".widget-slider:has(label:text-is('r')) .widget-readout").first
        expect(slider_value).to_have_text("17")
        page.screenshot(path=str(ARTIFACTS / "explorer.png"), full_page=True)
        browser.close()
