"""One progress-bar style for every long loop (tqdm on stderr, quiet when stderr is not a terminal
unless forced with T2V_TURBO_PROGRESS=1)."""

from __future__ import annotations

import os
import sys


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", **kw):
    """A tqdm bar; disabled (but still counting) when stderr is not a TTY, so logs stay clean."""
    from tqdm.auto import tqdm

    forced = os.environ.get("T2V_TURBO_PROGRESS")
    disable = (forced == "0") if forced is not None else not sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, leave=False, dynamic_ncols=True, **kw)
