"""A real Chromium (the box's, Debian's `chromium`) through Playwright, sized as a phone.

Playwright's own browser downloads are not used: `make servers` installs the
distribution's Chromium, and Playwright drives that binary.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Page, ViewportSize, async_playwright

PHONE = ViewportSize(width=390, height=844)


def require_chromium() -> str:
    """The binary, else skip the test (fail it under CI, which must run integration tests)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        message = "chromium is not installed (make test installs it: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the integration tests", pytrace=False)
        pytest.skip(message)
    return binary


@contextlib.asynccontextmanager
async def phone() -> AsyncIterator[Page]:
    """A page in a fresh headless Chromium with a phone's viewport; closed afterwards."""
    binary = require_chromium()
    async with async_playwright() as pw:
        # --no-sandbox: the tests run as root in CI, where Chromium's sandbox refuses to start
        browser = await pw.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport=PHONE, is_mobile=True, has_touch=True)
            yield page
        finally:
            await browser.close()
