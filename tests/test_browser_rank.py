"""Notebook 8's rank explorer in a real browser: JupyterLab on localhost, headless Chromium driven by Playwright.

Serves a copy of notebooks/08_rank.ipynb with the explorer test's server (the ``jupyter_lab``
fixture of tests/test_browser.py), runs it, and checks the table for r = 8 (every value measured),
then moves the r slider one step right with the keyboard and checks that the table shows the
values at r = 12, the next rank the slider offers (half-way to 16 on a log scale), with the
accuracies marked as interpolated; then back to 8, and with Home to r = 0, where the pre-trained
matrices were measured and LoRA does not exist. Saves screenshots to test-artifacts/.
"""

import shutil

from test_browser import ARTIFACTS, ROOT, jupyter_lab, run_all_cells  # noqa: F401 (jupyter_lab is a fixture)

from adapterlib.rank_widget import RankExplorer


def row_texts(explorer: RankExplorer, r: int) -> list[str]:
    """How the table shows each row at rank ``r``, as the browser renders its text (cells run together)."""
    return [f"at r = {r}valuehow"] + [f"{quantity}{value}{how}" for quantity, value, how in explorer.rows(r)]


def test_the_r_slider_moves_every_row(jupyter_lab, tmp_path):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    shutil.copy(ROOT / "notebooks" / "08_rank.ipynb", tmp_path / "notebooks")
    explorer = RankExplorer()
    expected = {r: row_texts(explorer, r) for r in (8, 12, 0)}
    assert any("interpolated between r=8 and r=16" in text for text in expected[12])
    assert not any("interpolated" in text for text in expected[8])
    assert any("r = 0 is no LoRA" in text for text in expected[0])
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser, page = run_all_cells(playwright, jupyter_lab, "08_rank.ipynb", tmp_path)
        table = page.locator(".widget-html-content table").first
        try:
            expect(table).to_contain_text(expected[8][0], timeout=180_000)
            for text in expected[8]:
                expect(table).to_contain_text(text)
        finally:
            table.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "rank-explorer-loaded.png"))
        slider = page.locator(".widget-slider:has(label:text-is('r'))").first
        for key, r in (("ArrowRight", 12), ("ArrowLeft", 8), ("Home", 0)):
            slider.locator(".noUi-handle").focus()
            page.keyboard.press(key)
            expect(slider.locator(".widget-readout")).to_have_text(str(r), timeout=30_000)
            for text in expected[r]:
                expect(table).to_contain_text(text, timeout=30_000)
            if r == 12:
                page.screenshot(path=str(ARTIFACTS / "rank-explorer.png"))
        browser.close()
