"""`t2v-turbo demo`: a local web app (Gradio) to generate videos and compare T2V-Turbo with its teacher.

    t2v-turbo demo                       # shipped MovingDigits turbo / vcm / teacher on 127.0.0.1:7860
    t2v-turbo demo --model-path ckpt/    # add a local checkpoint (repeatable)
    t2v-turbo demo --screenshot docs/demo.png   # render the README screenshot and exit
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..demo_app.server import SCREENSHOT_PROMPT, load_models, serve, shipped_available, take_screenshot
from ..errors import InputError
from . import _common as common


def main(argv: list[str]) -> int:
    p = common.parser("demo", "Start the local web demo (needs the [demo] extra: pip install -e '.[demo]').")
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
    common.add_compute_args(p)
    p.add_argument(
        "--screenshot",
        metavar="PNG",
        help="serve on a free port, generate one video in headless Chromium, save a PNG of the page and exit "
        "(shipped models when present, else --tiny ones)",
    )
    p.add_argument("--prompt", default=SCREENSHOT_PROMPT, help="the prompt used by --screenshot")
    a = p.parse_args(argv)
    if not 0 <= a.port <= 65535:
        raise InputError(f"--port must be in 0..65535, got {a.port}")
    if min(a.compare_steps) < 1:
        raise InputError("--compare-steps must be >= 1")
    for path in a.model_path:  # bad paths fail first, in one line, before anything slow
        if not Path(path).exists():
            raise InputError(f"--model-path {path!r} does not exist")

    a.device = common.setup_compute(a)
    from ..demo_app.ui import require_gradio

    require_gradio()
    tiny = a.tiny
    if a.screenshot and not tiny and not a.model_path and not shipped_available():
        print(
            "note: no shipped models in this install; the screenshot uses untrained --tiny models",
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
