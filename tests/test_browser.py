"""The r explorer in a real browser: JupyterLab on localhost, headless Chromium driven by Playwright.

Opens notebooks/07_explore_r.ipynb on a projector's screen (1280 x 800, and the same at 150% zoom),
runs it, and checks that the controls and the plot fit the screen and that text is at least 14 px;
then moves LoRA's r slider one step with the keyboard and checks that the number box, the card and
the table show LoRA's count for the new r while the adapter's count stays, then the same for the
adapter's slider. The measured accuracies are checked too: at the starting sizes, which the
comparison grid trained, the table shows what results/results.json records; one step off, it says
the size was not trained. Saves screenshots to test-artifacts/. The server, its kernel and the
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


def run_all_cells(playwright, jupyter_lab, notebook: str, home: Path, viewport=None, zoom: float = 1.0):
    """Chromium with a temporary profile, ``notebook`` opened in JupyterLab, every cell run; the
    browser and the page. ``viewport`` is the window in screen pixels (1400 x 1000 unless given);
    ``zoom`` is the browser's zoom (1.5: 150%), which leaves ``viewport / zoom`` CSS pixels to the
    page. HOME keeps chromium's crash-report and dconf folders in ``home`` too."""
    from playwright.sync_api import TimeoutError

    base, token = jupyter_lab
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_FLAGS, env={**os.environ, "HOME": str(home)}
    )
    width, height = (viewport or {"width": 1400, "height": 1000}).values()
    page = browser.new_page(
        viewport={"width": round(width / zoom), "height": round(height / zoom)}, device_scale_factor=zoom
    )
    page.goto(f"{base}/lab/tree/{notebook}?token={token}")
    page.locator(".jp-Notebook").first.wait_for(timeout=60_000)
    try:
        page.get_by_role("button", name="Select", exact=True).click(timeout=20_000)
    except TimeoutError:
        pass  # no kernel dialog: the kernel started on its own
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()
    return browser, page


PROJECTOR = {"width": 1280, "height": 800}


def inside(box: dict, area: dict) -> bool:
    """Whether a bounding box lies wholly inside an area (both in CSS pixels, as Playwright gives them)."""
    return (
        box["x"] >= area["x"] - 0.5
        and box["y"] >= area["y"] - 0.5
        and box["x"] + box["width"] <= area["x"] + area["width"] + 0.5
        and box["y"] + box["height"] <= area["y"] + area["height"] + 0.5
    )


def scroll_to_top(element) -> None:
    """Make ``element``'s cell the active one (JupyterLab keeps the active cell in view), then scroll the
    notebook until ``element`` starts at the top of its visible area."""
    element.page.locator(".jp-Cell", has=element).locator(".jp-InputPrompt").first.click()
    element.page.wait_for_timeout(1_000)
    element.evaluate(
        """element => {
            const top = element.closest('.jp-NotebookPanel-notebook').getBoundingClientRect().top;
            let scroller = element.parentElement;
            while (scroller.scrollHeight <= scroller.clientHeight) scroller = scroller.parentElement;
            scroller.scrollTop += element.getBoundingClientRect().top - top - 4;
        }"""
    )
    element.page.wait_for_timeout(1_000)


def font_px(locator) -> float:
    return locator.evaluate("element => parseFloat(getComputedStyle(element).fontSize)")


def size_control(page, label: str):
    return page.locator(f".size-control:has(b:text-is('{label}'))").first


def step(page, label: str, key: str = "ArrowRight") -> None:
    """One step of a size slider with the keyboard, as a presenter does with a remote's arrow keys."""
    size_control(page, label).locator(".noUi-handle").focus()
    page.keyboard.press(key)


@pytest.mark.parametrize("zoom", [1.0, 1.5], ids=["1280x800", "1280x800-at-150%"])
def test_explorer_on_a_projector(jupyter_lab, tmp_path, zoom):
    """With the file browser closed, as for a presentation: at 1280 x 800 the controls and the plot are
    on the screen together; at 150% zoom every control,
    the plot and the table fit the width and each fits the height; text is 14 px or more; a slider
    step changes that method's numbers only, a plain click on a target checkbox adds the target."""
    from playwright.sync_api import expect, sync_playwright

    minilm = model_shapes()["MiniLM-L6 (packaged, d=384)"]
    adapter = {r: table_row("adapter", count(minilm, AdapterConfig(r=r)).trainable) for r in (16, 17)}
    lora = {r: table_row("LoRA", count(minilm, LoraConfig(r=r)).trainable) for r in (8, 9)}
    adapter_measured = {  # r = 16 was trained, r = 17 was not
        16: measured_row("adapter", count(minilm, AdapterConfig(r=16)), committed_accuracy("adapter r=16")),
        17: measured_row("adapter", count(minilm, AdapterConfig(r=17)), "not trained at this size"),
    }
    name = "explorer" if zoom == 1 else "explorer-150"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser, page = run_all_cells(
            playwright, jupyter_lab, "07_explore_r.ipynb", tmp_path, PROJECTOR, zoom
        )
        screen = page.viewport_size
        explorer = page.locator(".adapterlib-explorer").first
        table = explorer.locator(".widget-html-content table").first
        plot = explorer.locator("img").first
        cards = explorer.locator(".explorer-card")
        try:
            expect(table).to_contain_text(adapter[16], timeout=180_000)
            expect(table).to_contain_text(lora[8])
            expect(table).to_contain_text(adapter_measured[16])  # the measured value at a trained size
            expect(table).to_contain_text(committed_accuracy("lora r=8"))
            expect(plot).to_be_visible()
            expect(page.locator(".jp-InputPrompt", has_text="[*]")).to_have_count(0, timeout=120_000)
            news = page.get_by_text("Would you like to get notified")
            if news.is_visible():
                page.get_by_role("button", name="No", exact=True).click()
            page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click()  # as a presenter:
            expect(page.locator(".jp-FileBrowser")).to_be_hidden()  # the file browser closed (Ctrl+B)
            page.wait_for_timeout(1_000)  # the last redraw settles
            scroll_to_top(explorer)
            page.wait_for_timeout(500)
        finally:
            page.screenshot(path=str(ARTIFACTS / f"{name}-loaded.png"))
        visible = page.locator(
            ".jp-NotebookPanel-notebook"
        ).first.bounding_box()  # between toolbar and status bar
        assert visible["width"] <= screen["width"] and visible["height"] <= screen["height"]
        viewport = {"width": visible["x"] + visible["width"], "height": visible["y"] + visible["height"]}
        controls = [explorer.locator(".widget-dropdown").first] + [cards.nth(i) for i in range(cards.count())]
        assert cards.count() == 5  # adapter, LoRA, DoRA, parallel adapter, prefix tuning
        for part in controls + [plot]:
            box = part.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"] + 0.5, box  # never cut off
            assert box["height"] <= visible["height"], box  # each fits the screen when scrolled to
        assert table.bounding_box()["x"] + table.bounding_box()["width"] <= viewport["width"] + 0.5
        if zoom == 1:  # all controls and the whole plot on the screen at once
            for part in controls + [plot]:
                assert inside(part.bounding_box(), visible), (part, part.bounding_box(), visible)
        for part in (
            size_control(page, "LoRA r").locator("b"),
            explorer.locator(".widget-checkbox label").first,
            table.locator("td").first,
            explorer.locator(".card-numbers").first,
        ):
            assert font_px(part) >= 14
        explorer_width = explorer.bounding_box()["width"]
        assert plot.bounding_box()["width"] >= min(0.95 * explorer_width, 1000)  # the plot takes the width

        lora_box = size_control(page, "LoRA r").locator("input")
        step(page, "LoRA r")  # one step right: r = 8 -> 9
        expect(lora_box).to_have_value("9", timeout=30_000)
        expect(table).to_contain_text(lora[9], timeout=30_000)
        expect(table).to_contain_text(adapter[16])  # the adapter's count stays
        lora_card = cards.filter(has=size_control(page, "LoRA r"))
        expect(lora_card.locator(".card-numbers")).to_contain_text(
            f"{count(minilm, LoraConfig(r=9)).trainable:,} ("
        )
        step(page, "adapter r")  # off the trained sizes: the accuracy says so
        expect(size_control(page, "adapter r").locator("input")).to_have_value("17", timeout=30_000)
        expect(table).to_contain_text(adapter_measured[17], timeout=30_000)
        expect(table).to_contain_text(lora[9])
        step(page, "adapter r", "ArrowLeft")  # back onto a trained size, computed by the running kernel
        expect(table).to_contain_text(adapter_measured[16], timeout=30_000)
        lora_card.get_by_text("key", exact=True).click()  # a plain click adds a target
        with_key = count(minilm, LoraConfig(r=9, target_modules=("query", "key", "value"))).trainable
        expect(table).to_contain_text(table_row("LoRA", with_key), timeout=30_000)
        scroll_to_top(explorer)
        page.wait_for_timeout(2_000)  # the new plot painted
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
        browser.close()
