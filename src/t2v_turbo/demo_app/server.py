"""`t2v-turbo demo`: a local web app (Gradio) to generate videos and compare T2V-Turbo with its teacher.

    t2v-turbo demo                       # shipped MovingDigits turbo / vcm / teacher on 127.0.0.1:7860
    t2v-turbo demo --model-path ckpt/    # add a local checkpoint (repeatable)
    python -m t2v_turbo.demo --screenshot docs/demo.png   # render the README screenshot and exit

The page itself is `demo_app/ui.py`; what its buttons do is `demo_app/handlers.py`.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import UserError
from .pipeline import SHIPPED_MODELS, WORLD_DIR

SCREENSHOT_PROMPT = "a red digit 3 moving left"


def shipped_available() -> list[str]:
    """The shipped MovingDigits models present in this install (they are built by `t2v-turbo world build`)."""
    return [name for name in SHIPPED_MODELS if (WORLD_DIR / name / "unet").exists()]


def tiny_models() -> dict:
    """Untrained seeded toy models built in code (a teacher and its student): for trying the page."""
    from .models.tiny import tiny_modelscope

    teacher = tiny_modelscope(seed=0).freeze().eval()
    return {"turbo": teacher.make_student().freeze().eval(), "teacher": teacher}


def load_models(model_paths: Sequence[str], device: str, shipped: bool = True, tiny: bool = False) -> dict:
    """name -> loaded Backbone: the shipped models that exist (or tiny ones), then each --model-path.

    Raises UserError (one line) for a path that does not exist or does not load.
    """
    from .pipeline import load_backbone

    models: dict = {}
    for p in model_paths:  # check every path before loading anything slow
        if not Path(p).exists():
            raise UserError(f"--model-path {p!r} does not exist")
    if tiny:
        models.update({k: m.to(device) for k, m in tiny_models().items()})
    elif shipped:
        for name in shipped_available():
            models[name] = load_backbone(name, device=device)
    for p in model_paths:
        try:
            models[str(Path(p))] = load_backbone(p, device=device)
        except UserError:
            raise
        except Exception as e:  # a folder missing parts, a corrupt file, ...
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"--model-path {p!r} cannot be loaded: {msg}") from e
    if not models:
        raise UserError(
            f"no models: the shipped MovingDigits models are missing from {WORLD_DIR} "
            "(build them with `t2v-turbo world build`); or give --model-path PATH, or --tiny for untrained toy models"
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
    from .demo_app.handlers import DemoHandlers
    from .demo_app.ui import build_ui, launch, require_gradio

    require_gradio()  # fail before any work when the extra is missing
    handlers = DemoHandlers(models, **handler_kw)
    page = build_ui(handlers)
    url = launch(page, handlers, host=host, port=port, block=block)
    return page, handlers, url


def take_screenshot(path: str | Path, models: Mapping, prompt: str = SCREENSHOT_PROMPT, **handler_kw) -> dict:
    """Serve on a free loopback port, generate `prompt` in headless Chromium, save a PNG, stop."""
    from .demo_app.browser import missing_requirements, screenshot

    why = missing_requirements()
    if why:
        raise UserError(f"cannot take a screenshot: {why}")
    page, _, url = serve(models, "127.0.0.1", free_port(), block=False, **handler_kw)
    try:
        return screenshot(url, path, prompt)
    finally:
        page.close()


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="t2v-turbo demo",
        description="Start the local web demo (needs the [demo] extra: pip install 't2v-turbo[demo]').",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=7860)
    p.add_argument(
        "--model-path",
        action="append",
        default=[],
        metavar="PATH",
        help="a local checkpoint to offer besides the shipped models (repeatable)",
    )
    p.add_argument("--no-shipped", action="store_true", help="offer only the --model-path checkpoints")
    p.add_argument(
        "--tiny", action="store_true", help="untrained toy models built in code (no weights needed)"
    )
    p.add_argument(
        "--compare",
        nargs=2,
        default=["teacher", "turbo"],
        metavar=("TEACHER", "STUDENT"),
        help="models of the compare tab (names or --model-path paths; default: teacher turbo)",
    )
    p.add_argument("--compare-steps", nargs=2, type=int, default=[50, 4], metavar=("TEACHER", "STUDENT"))
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument(
        "--screenshot",
        metavar="PNG",
        help="serve on a free port, generate one video in headless Chromium, save a PNG of the page and exit "
        "(shipped models when present, else --tiny ones)",
    )
    p.add_argument("--prompt", default=SCREENSHOT_PROMPT, help="the prompt used by --screenshot")
    a = p.parse_args(argv)
    if not 0 <= a.port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {a.port}")
    if min(a.compare_steps) < 1:
        raise UserError("--compare-steps must be >= 1")
    for path in a.model_path:  # bad paths fail first, in one line, before anything slow
        if not Path(path).exists():
            raise UserError(f"--model-path {path!r} does not exist")

    if a.device is None:
        import torch

        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    from .demo_app.ui import require_gradio

    require_gradio()
    tiny = a.tiny
    if a.screenshot and not tiny and not a.model_path and not shipped_available():
        print(
            f"note: no shipped models in {WORLD_DIR}; the screenshot uses untrained --tiny models",
            file=sys.stderr,
        )
        tiny = True
    models = load_models(a.model_path, a.device, shipped=not a.no_shipped, tiny=tiny)
    compare = tuple(c if c in models else str(Path(c)) for c in a.compare)
    kw = {"compare_models": compare, "compare_steps": tuple(a.compare_steps)}
    print(f"models: {', '.join(models)}", file=sys.stderr)
    if not all(c in models for c in compare):
        print(f"note: the compare tab is off: it needs both {list(compare)}", file=sys.stderr)
    if a.screenshot:
        state = take_screenshot(a.screenshot, models, a.prompt, **kw)
        print(f"{a.screenshot} (video {state['width']}x{state['height']}, {state['duration']:.2f} s)")
        return 0
    serve(models, a.host, a.port, block=True, **kw)
    return 0


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
