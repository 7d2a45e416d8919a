"""The HTML part rendered by Chromium: the layout a reader sees, with screenshots kept."""

from __future__ import annotations

from pathlib import Path

from selenium.webdriver.chrome.webdriver import WebDriver

from tests.digests.helpers import composed_html
from tests.support.digests import artifacts_dir, greeting, js


def test_the_digest_fits_a_phone_and_a_desktop_window(tmp_path: Path, chromium: WebDriver) -> None:
    page = tmp_path / "digest.html"
    page.write_text(composed_html(tmp_path), encoding="utf-8")
    shots = artifacts_dir("digest")
    for width in (375, 1200):
        chromium.set_window_size(width, 900)
        chromium.get(page.as_uri())
        assert js(chromium, "return window.innerWidth") == width
        shot = shots / f"digest-{width}.png"
        assert chromium.save_screenshot(str(shot)), f"no screenshot saved at {shot}"
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert greeting("uk", "Олександра Іваненко-Ковальчук") in js(
            chromium, "return document.body.innerText"
        )
        scroll_width = js(chromium, "return document.documentElement.scrollWidth")
        inner_width = js(chromium, "return window.innerWidth")
        assert scroll_width <= inner_width, (
            f"the digest is {scroll_width}px wide in a {inner_width}px window: it scrolls sideways"
        )
        container = js(
            chromium,
            "return document.querySelector('table.container').getBoundingClientRect().width",
        )
        assert container <= min(600, width)
        if width == 1200:
            assert container == 600  # the column keeps its width on a wide screen
