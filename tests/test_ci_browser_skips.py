"""Under CI (``CI=true``) the top-level conftest turns a skipped browser test into a failure."""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
SKIPPING = """
import pytest

def test_needs_chromium():
    pytest.skip("/usr/bin/chromium is missing (apt-get install chromium)")
"""


@pytest.fixture
def skipping_tests(pytester):
    pytester.makeconftest((ROOT / "conftest.py").read_text())
    pytester.makepyfile(test_browser_fake=SKIPPING, test_other=SKIPPING)
    return pytester


def test_in_ci_a_browser_skip_fails(skipping_tests, monkeypatch):
    monkeypatch.setenv("CI", "true")
    result = skipping_tests.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*a browser test may not be skipped in CI: *chromium is missing*"])


@pytest.mark.parametrize("ci", [None, "false"])
def test_outside_ci_a_browser_test_may_skip(skipping_tests, monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    skipping_tests.runpytest("-p", "no:cacheprovider").assert_outcomes(skipped=2)
