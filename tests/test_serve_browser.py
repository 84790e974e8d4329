"""The web page in a real headless browser (Debian's chromium driven by Playwright): load the page, upload a
photo, see the restored image, the face box and the report, move the w slider and see the result change, drag
the before/after divider; then the offline API reader at /docs.

Chromium is found as $CODEFORMER_CHROMIUM, `chromium` or `chromium-browser` on PATH (`make browser` installs
Debian's package). Without one the test fails with that instruction: a page test that silently skips would
prove nothing in CI.
"""

from __future__ import annotations

import os
import shutil

import pytest

from codeformer.serve.app import create_app
from codeformer.serve.server import ServerThread
from tests.conftest import DATA
from tests.serve_support import tiny_restorer

# Sum of the result image's pixels, drawn on a canvas (the result is a same-origin blob: URL).
PIXEL_SUM = """() => {
  const img = document.getElementById('after');
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let s = 0;
  for (let i = 0; i < d.length; i += 1) s += d[i] * ((i % 7) + 1);
  return s;
}"""


def chromium_path() -> str:
    for candidate in (os.environ.get("CODEFORMER_CHROMIUM"), shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and os.path.exists(candidate):
            return candidate
    pytest.fail("no chromium found: run `make browser` (apt-get install chromium) or set CODEFORMER_CHROMIUM")


def test_page_restores_and_slider_changes_the_result(tmp_path):
    from playwright.sync_api import sync_playwright

    app = create_app(tiny_restorer())
    with ServerThread(app) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.url + "/")
            page.wait_for_function("document.getElementById('model').textContent.includes('codeformer')")

            page.set_input_files("#file", str(DATA / "astronaut.png"))
            page.wait_for_selector("body[data-state=done]", timeout=60_000)
            assert page.get_attribute("#after", "data-w") == "0.5"
            first = page.evaluate(PIXEL_SUM)
            assert page.locator("#boxes .box").count() == 1
            assert page.locator("#faces-table tr").count() == 1
            assert "1 face restored" in page.inner_text("#status")
            assert page.get_attribute("#download", "href").startswith("blob:")
            assert page.get_attribute("#download", "download").endswith("_w0.50.png")

            page.focus("#w")
            page.keyboard.press("End")  # the slider to w = 1, as a keyboard user would
            assert page.input_value("#w") == "1"
            page.wait_for_selector("#after[data-w='1']", timeout=60_000)
            page.wait_for_selector("body[data-state=done]", timeout=60_000)
            second = page.evaluate(PIXEL_SUM)
            assert second != first  # the restored image changed with w
            assert "w = 1.00" in page.inner_text("#status")

            box = page.locator("#compare").bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.5, steps=5)
            page.mouse.up()
            clip = page.evaluate("getComputedStyle(document.getElementById('after-clip')).clipPath")
            assert clip == "inset(0px 0px 0px 20%)", clip
            page.screenshot(path=str(tmp_path / "page.png"))

            page.goto(server.url + "/docs")  # the offline API reader renders the OpenAPI description
            page.wait_for_selector("h2:has-text('POST /v1/restore')")
            assert "fidelity" in page.inner_text("#api") and "413" in page.inner_text("#api")
            assert errors == []
        finally:
            browser.close()
