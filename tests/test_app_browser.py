"""End to end in a real browser: the app on a loopback port, driven by Debian's headless Chromium
through Playwright (Playwright's own browser download is not used).

Set SDS3D_ARTIFACTS=<folder> to keep the screenshot; it is always written to the test's tmp_path.
"""

import io
import os
import re
import shutil
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from PIL import Image


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium chromium-driver)", allow_module_level=True)
pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[app]')")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")


@pytest.fixture
def app_url(tmp_path, tiny_prior_config):
    """The app (as `sds3d app --configs tiny-prior.yaml` starts it) serving tmp_path/out on a free port."""
    from sds3d.app.server import start

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = start("127.0.0.1", port, tmp_path / "out", [tiny_prior_config])
    try:
        yield server.url
    finally:
        server.close()


def canvas_has_drawing(locator) -> bool:
    """More than 2% of the viewer's pixels differ from its most common colour (the empty background)."""
    image = Image.open(io.BytesIO(locator.screenshot())).convert("RGB")
    pixels = image.width * image.height
    background = max(image.getcolors(pixels))[0]
    return pixels - background > 0.02 * pixels


def wait_for_drawing(locator, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not canvas_has_drawing(locator):
        assert time.monotonic() < deadline, "the 3D viewer stayed blank"
        time.sleep(0.5)


def save_screenshot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=True)
    if os.environ.get("SDS3D_ARTIFACTS"):
        Path(os.environ["SDS3D_ARTIFACTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / name, Path(os.environ["SDS3D_ARTIFACTS"]) / name)


def test_prompt_to_mesh_in_the_3d_viewer_then_again_from_the_gallery(app_url, tmp_path):
    expect = sync_api.expect
    outside, glbs = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 1000})
        try:
            page = browser.new_page()
            page.on("request", lambda r: outside.append(r.url) if urlparse(r.url).hostname not in ("127.0.0.1", None) else None)
            page.on("response", lambda r: glbs.append(r) if urlparse(r.url).path.endswith("mesh.glb") else None)
            page.goto(app_url)
            status = page.locator("#status textarea")

            page.locator("#run").click()
            expect(status).to_have_value(re.compile("Cannot start: the prompt is empty"))

            page.get_by_label("Prompt").fill("a red cube")
            page.locator("#config input").click()
            page.get_by_role("option", name=re.compile("^tiny-prior")).click()
            expect(page.locator("#steps input")).to_have_value("20")  # the chosen config's own value
            page.locator("#steps input").fill("6")
            page.locator("#run").click()
            expect(status).to_have_value(re.compile("^Finished 'a red cube'"), timeout=90_000)
            wait_for_drawing(page.locator("#viewer canvas"))
            assert [r.status for r in glbs] == [200]
            expect(page.locator("#download")).to_be_visible()
            save_screenshot(page, tmp_path, "app-run.png")

            page.reload()
            page.locator("#gallery button.thumbnail-item").filter(has_text="a red cube").first.click()
            expect(status).to_have_value(re.compile(r"^a red cube · sds on model .*\n6/6 steps"))
            wait_for_drawing(page.locator("#viewer canvas"))
            assert len(glbs) == 2 and glbs[-1].status == 200
        finally:
            browser.close()
    assert outside == [], "the page made requests off this machine"
