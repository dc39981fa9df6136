"""The demo in a real browser: Debian's Chromium, headless, driven by Playwright, against the app
served in-process on 127.0.0.1 with tiny models. Run with `pytest -m browser`.

The screenshot goes to pytest's tmp folder, or to $T2V_TURBO_DEMO_SCREENSHOT when set. The README's
docs/demo.png is made with the shipped models by `t2v-turbo demo --screenshot docs/demo.png`.
"""

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

PROMPT = "a red digit 3 moving left"
TIMEOUT_S = 120  # per browser wait; generation with tiny models takes seconds


@pytest.fixture(scope="module")
def requirements():
    pytest.importorskip("gradio", reason="the [demo] extra (gradio) is not installed")
    from t2v_turbo.demo_app.browser import missing_requirements

    why = missing_requirements()
    if why:
        pytest.skip(f"browser test needs Playwright and Chromium: {why}")


@pytest.fixture(scope="module")
def served(requirements, tiny_teacher, tmp_path_factory):
    from t2v_turbo.demo_app.server import free_port, serve

    models = {"turbo": tiny_teacher.make_student().freeze().eval(), "teacher": tiny_teacher}
    out = tmp_path_factory.mktemp("demo-out")
    page, handlers, url = serve(
        models, "127.0.0.1", free_port(), block=False, out_dir=out, compare_steps=(2, 1)
    )
    assert url.startswith("http://127.0.0.1:")
    try:
        yield url
    finally:
        page.close()


@pytest.fixture
def browser_page(served):
    from t2v_turbo.demo_app.browser import chromium_page

    with chromium_page() as page:
        yield page


def test_generate_plays_a_video_and_offers_a_download(served, browser_page, tmp_path):
    from t2v_turbo.demo_app.browser import generate_in_page

    state = generate_in_page(browser_page, served, PROMPT, TIMEOUT_S)
    assert state["error"] is None and state["readyState"] >= 1 and state["duration"] > 0
    assert (state["width"], state["height"]) == (256, 256)  # 16x16 tiny frames, x16 nearest neighbour
    assert state["src"].startswith(served.rstrip("/")) and state["src"].endswith(".mp4")
    link = browser_page.locator("#download a[href]").first
    link.wait_for(timeout=TIMEOUT_S * 1000)
    assert link.get_attribute("href").endswith(".mp4")
    assert "4 steps" in browser_page.locator("#status").inner_text()
    shot = Path(os.environ.get("T2V_TURBO_DEMO_SCREENSHOT") or tmp_path / "demo.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    browser_page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_empty_and_overlong_prompts_show_an_error(served, browser_page):
    ms = TIMEOUT_S * 1000
    browser_page.goto(served, wait_until="domcontentloaded", timeout=ms)
    box = browser_page.locator("#prompt textarea")
    box.wait_for(timeout=ms)
    browser_page.locator("button#generate").click()
    browser_page.get_by_text("please enter a prompt").first.wait_for(timeout=ms)
    box.fill("x" * 301)
    browser_page.locator("button#generate").click()
    browser_page.get_by_text("the prompt is too long").first.wait_for(timeout=ms)
    assert browser_page.locator("#video video").count() == 0


def test_compare_tab_shows_two_videos_and_two_timings(served, browser_page):
    ms = TIMEOUT_S * 1000
    browser_page.goto(served, wait_until="domcontentloaded", timeout=ms)
    browser_page.get_by_role("tab", name="Compare").click()
    browser_page.locator("#compare-prompt textarea").fill(PROMPT)
    browser_page.locator("button#compare").click()
    for root in ("#teacher-video", "#turbo-video"):
        browser_page.wait_for_function(
            "(r) => { const v = document.querySelector(r + ' video'); return !!v && v.readyState >= 1; }",
            arg=root,
            timeout=ms,
        )
    assert "2 steps" in browser_page.locator("#teacher-time").inner_text()
    assert "1 step (" in browser_page.locator("#turbo-time").inner_text()
    assert "faster" in browser_page.locator("#compare-status").inner_text()
