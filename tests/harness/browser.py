"""The station board in a real browser: Debian's Chromium driven by Playwright.

`chromium()` starts one headless browser (the tests share one per module); `Board.open`
opens ``/board`` in a fresh context as a station would: it taps the "enable sound"
screen, chooses a responder, and waits for the link to be live. Every console error
and uncaught page error the page has is kept in `Board.errors`, so a test can say
there were none, and every tone it plays in `Board.tones` (its oscillators are
listened to, so the sound is checked without a loudspeaker).

Playwright never downloads a browser here: it drives ``/usr/bin/chromium``, which
``make servers`` installs with apt-get.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, ConsoleMessage, Error, Locator, Page, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
#: a 24" screen at the station
SCREEN = {"width": 1920, "height": 1080}
#: what the board plays, as the test hears it: every tone the page starts, in order
LISTEN = """
window.__tones = [];
const start = OscillatorNode.prototype.start;
OscillatorNode.prototype.start = function (when) {
  window.__tones.push({type: this.type, freq: this.frequency.value, at: Date.now()});
  return start.apply(this, arguments);
};
"""

#: the texts `Board.clipped` finds cut off: an element that hides what overflows it (a
#: tile, a line with an ellipsis, a booth's name) and is wider or taller than its box, or
#: a part of the bar beyond the screen
CLIPPED = """
() => {
  const cut = [];
  for (const el of document.querySelectorAll(".tile, .tile *")) {
    const style = getComputedStyle(el);
    if (style.overflowX === "visible" && style.overflowY === "visible") continue;
    if (el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1) {
      const what = el.classList.contains("tile") ? "the tile" : el.textContent.trim();
      cut.push(el.closest(".tile").dataset.booth + ": " + what + " (" + el.scrollWidth + "x" +
               el.scrollHeight + " in " + el.clientWidth + "x" + el.clientHeight + ")");
    }
  }
  const width = document.documentElement.clientWidth;
  for (const el of document.querySelectorAll(".bar > *")) {
    const box = el.getBoundingClientRect();
    if (box.left < 0 || box.right > width + 1) cut.push("bar: " + el.textContent.trim());
  }
  return cut;
}
"""


def require_chromium() -> str:
    """The browser, else skip the test (fail it under CI, which must run browser tests)."""
    if not os.access(CHROMIUM, os.X_OK):
        message = f"{CHROMIUM} is missing (make test installs it: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the browser tests", pytrace=False)
        pytest.skip(message)
    return str(CHROMIUM)


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """One headless Chromium for as long as the block runs."""
    executable = require_chromium()
    # as root, Chromium refuses to start without --no-sandbox
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=args)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Board:
    """One open board page."""

    page: Page
    errors: list[str] = field(default_factory=list)

    @classmethod
    async def new(cls, browser: Browser, *, timezone: str = "Europe/Lisbon",
                  theme: str | None = None, viewport: dict[str, int] | None = None) -> Board:
        """A blank page on a fresh context (no cookie, nothing remembered), listened to."""
        context = await browser.new_context(viewport=viewport or SCREEN,  # type: ignore[arg-type]
                                            timezone_id=timezone, locale="en-GB")
        await context.add_init_script(LISTEN)
        if theme is not None:
            await context.add_init_script(
                f"localStorage.setItem('boothwatch.board.theme', {theme!r})")
        page = await context.new_page()
        board = cls(page)
        page.on("console", board._console)
        page.on("pageerror", board._page_error)
        return board

    @classmethod
    async def open(cls, browser: Browser, base: str, *, password: str,
                   responder: str | None = "ana", **new: Any) -> Board:
        """``/board`` on a fresh context, logged in with the station ``password``: sound on,
        ``responder`` chosen, the link live."""
        board = await cls.new(browser, **new)
        page = board.page
        await page.goto(f"{base}/board")
        assert await board.log_in(password) == 200
        await board.enable_sound()
        await board.expect('[data-link="live"]')
        if responder is not None:
            await page.locator("[data-responder-picker]").select_option(responder)
        return board

    async def enable_sound(self) -> None:
        """Tap the "enable sound" screen if it is up: after the tap on "Log in" Chromium
        lets the page play at once (that tap was this tab's user activation)."""
        await self.page.wait_for_load_state()
        gate = self.page.locator("#gate")
        if await gate.is_visible():
            await gate.click()
        await self.expect("#gate", hidden=True)
        await self.expect('#sound[data-sound="on"]')

    async def log_in(self, password: str) -> int:
        """Fill in the station login form the page shows; the status of the answer."""
        await self.page.locator('input[name="password"]').fill(password)
        async with self.page.expect_navigation() as answer:
            await self.page.locator('form[action="/board/login"] [type="submit"]').click()
        response = await answer.value
        return response.status if response is not None else 0

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} ({message.location.get('url')})")

    def _page_error(self, error: Error) -> None:
        self.errors.append(f"page: {error}")

    async def tones(self, type: str | None = None) -> list[dict[str, Any]]:
        """Every tone the page has played (``type``: only the square alarm, the sine chime,
        the sawtooth of a lost link)."""
        played: list[dict[str, Any]] = await self.page.evaluate("window.__tones")
        return [t for t in played if type is None or t["type"] == type]

    async def clipped(self) -> list[str]:
        """Every text of the tiles and the bar cut off where it is shown (an ellipsis, or
        past the edge of its tile or the screen): a longer language's words must fit."""
        found: list[str] = await self.page.evaluate(CLIPPED)
        return found

    def tile(self, booth: str) -> Locator:
        return self.page.locator(f'[data-booth="{booth}"]')

    async def expect(self, selector: str, *, timeout: float = 5.0, hidden: bool = False) -> None:
        """Wait until ``selector`` matches a visible element (or none is visible)."""
        await self.page.wait_for_selector(selector, state="hidden" if hidden else "visible",
                                          timeout=timeout * 1000)

    async def close(self) -> None:
        await self.page.context.close()
