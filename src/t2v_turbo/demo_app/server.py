"""The web demo's server side: which models to offer, serving the page, the README screenshot.

The command is commands/demo.py (`t2v-turbo demo`); the page is `ui.py`; what its buttons do is
`handlers.py`.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import CheckpointError, InputError
from ..models.registry import MODELS, load_backbone

SCREENSHOT_PROMPT = "a red digit 3 moving left"


DEFAULT_MODELS = ("turbo", "vcm", "teacher", "fm-turbo", "fm-vcm", "fm-teacher")  # UNet family, then flow matching


def shipped_available(names=DEFAULT_MODELS) -> list[str]:
    """The registered models of `names` that load in this install (e.g. the MovingDigits world's)."""
    return [name for name in names if name in MODELS]


def tiny_models() -> dict:
    """Untrained seeded toy models built in code (a teacher and its student): for trying the page."""
    from ..models.tiny import tiny_modelscope

    teacher = tiny_modelscope(seed=0).freeze().eval()
    return {"turbo": teacher.make_student().freeze().eval(), "teacher": teacher}


def load_models(model_paths: Sequence[str], device: str, shipped: bool = True, tiny: bool = False) -> dict:
    """name -> loaded Backbone: the shipped models that exist (or tiny ones), then each --model-path.

    Raises a one-line InputError / CheckpointError for a path that does not exist or does not load.
    """
    models: dict = {}
    for p in model_paths:  # check every path before loading anything slow
        if not Path(p).exists():
            raise InputError(f"--model-path {p!r} does not exist")
    if tiny:
        models.update({k: m.to(device) for k, m in tiny_models().items()})
    elif shipped:
        for name in shipped_available():
            try:
                models[name] = load_backbone(name, device=device)
            except CheckpointError:  # a registered model whose weights are missing: leave it out
                continue
    for p in model_paths:
        models[str(Path(p))] = load_backbone(p, device=device)
    if not models:
        raise InputError(
            "no models: the shipped MovingDigits models are missing "
            "(build them with `t2v-turbo world build --in-place`); or give --model-path PATH, or --tiny for untrained toy models"
        )
    return models


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve(
    models: Mapping, host: str = "127.0.0.1", port: int | None = None, block: bool = True, **handler_kw
):
    """Build the handlers and the page over already-loaded models and serve them.

    Returns (gradio Blocks, handlers, URL); with block=False it returns at once (stop with `.close()`).
    """
    from .handlers import DemoHandlers
    from .ui import build_ui, launch, require_gradio

    require_gradio()  # fail before any work when the extra is missing
    handlers = DemoHandlers(models, **handler_kw)
    page = build_ui(handlers)
    url = launch(page, handlers, host=host, port=port, block=block)
    return page, handlers, url


def take_screenshot(path: str | Path, models: Mapping, prompt: str = SCREENSHOT_PROMPT, **handler_kw) -> dict:
    """Serve on a free loopback port, generate `prompt` in headless Chromium, save a PNG, stop."""
    from .browser import missing_requirements, screenshot

    why = missing_requirements()
    if why:
        raise InputError(f"cannot take a screenshot: {why}")
    page, _, url = serve(models, "127.0.0.1", free_port(), block=False, **handler_kw)
    try:
        return screenshot(url, path, prompt)
    finally:
        page.close()
