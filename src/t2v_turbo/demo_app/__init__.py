"""The local web demo (`t2v-turbo demo`): handlers.py (plain Python: validate, generate, write mp4),
ui.py (the Gradio page; Gradio is the optional `[demo]` extra), browser.py (headless Chromium via
Playwright, for the browser test and README screenshots). The command line lives in `t2v_turbo.commands.demo`; serving in `server.py`."""

from .handlers import MAX_PROMPT_CHARS, DemoHandlers, Result, display_upscale

__all__ = ["MAX_PROMPT_CHARS", "DemoHandlers", "Result", "display_upscale"]
