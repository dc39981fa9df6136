"""Drive the demo page in headless Chromium with Playwright: the browser test and `--screenshot` use this.

Needs the `playwright` Python package and a Chromium binary (Debian's `chromium` at /usr/bin/chromium;
Playwright's own browser download is not needed). Every request to a non-loopback host is aborted.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}

# the first <video> under `root` that has loaded at least its metadata (a playable file)
_VIDEO_STATE_JS = """(root) => {
  const v = document.querySelector(root + ' video');
  if (!v) return null;
  return {src: v.currentSrc || v.src, readyState: v.readyState, duration: v.duration,
          width: v.videoWidth, height: v.videoHeight, error: v.error ? v.error.code : null};
}"""
_VIDEO_READY_JS = """(root) => {
  const v = document.querySelector(root + ' video');
  return !!v && v.readyState >= 1 && v.duration > 0;
}"""


def chromium_path() -> str | None:
    """The Chromium to drive: $T2V_TURBO_CHROMIUM, /usr/bin/chromium, or `chromium` on PATH."""
    for cand in (os.environ.get("T2V_TURBO_CHROMIUM"), CHROMIUM, shutil.which("chromium")):
        if cand and Path(cand).exists():
            return cand
    return None


def missing_requirements() -> str | None:
    """Why a browser run is impossible here (None when playwright and chromium are both present)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright)"
    if chromium_path() is None:
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install -y chromium)"
    return None


def _only_loopback(route) -> None:
    host = urlsplit(route.request.url).hostname or ""
    if route.request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
        route.continue_()
    else:
        route.abort()


@contextmanager
def chromium_page(width: int = 1280, height: int = 900) -> Iterator:
    """A Playwright page in headless Chromium that can reach loopback hosts only."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise RuntimeError(missing_requirements() or "no chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport={"width": width, "height": height}, service_workers="block"
            )
            page = context.new_page()
            page.route("**/*", _only_loopback)
            yield page
        finally:
            browser.close()


def generate_in_page(page, url: str, prompt: str, timeout_s: float = 120) -> dict:
    """Open the demo, type `prompt`, click Generate, wait until the output <video> has loaded.

    Returns the video element's state: src, readyState, duration, width, height, error.
    """
    ms = int(timeout_s * 1000)
    page.goto(url, wait_until="domcontentloaded", timeout=ms)
    box = page.locator("#prompt textarea")
    box.wait_for(state="visible", timeout=ms)
    box.fill(prompt)
    page.locator("button#generate").click()
    page.wait_for_function(_VIDEO_READY_JS, arg="#video", timeout=ms, polling=200)
    return page.evaluate(_VIDEO_STATE_JS, "#video")


def screenshot(url: str, path: str | Path, prompt: str, timeout_s: float = 180) -> dict:
    """Generate `prompt` in the page at `url` and save a PNG of the page to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with chromium_page() as page:
        state = generate_in_page(page, url, prompt, timeout_s)
        page.wait_for_timeout(500)  # let the player settle on a frame
        page.screenshot(path=str(path), full_page=True)
    return state
