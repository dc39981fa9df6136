"""Plugin discovery: packages that extend t2v-turbo declare an entry point in the group
`t2v_turbo.plugins` whose target is a callable `register()`; it adds their models, data sources,
rewards, prompt sets, judges and commands to the public registries (see registry.py).

The built-in MovingDigits world is such a plugin (declared in pyproject.toml), so the core library
never imports it. `load_plugins()` runs each plugin once; a plugin that fails to load is reported on
stderr in one line and skipped, so a broken third-party package cannot stop the core.
"""

from __future__ import annotations

import sys
from importlib import metadata

GROUP = "t2v_turbo.plugins"
_loaded: dict[str, bool] = {}
_loading = False


def load_plugins() -> list[str]:
    """Run every registered plugin's `register()` once; returns the names loaded so far."""
    global _loading
    if _loading:  # a plugin's registration looked a name up: do not recurse
        return [n for n, ok in _loaded.items() if ok]
    _loading = True
    try:
        for ep in metadata.entry_points(group=GROUP):
            if ep.name in _loaded:
                continue
            _loaded[ep.name] = False
            try:
                fn = ep.load()
                if callable(fn):
                    fn()
                _loaded[ep.name] = True
            except Exception as e:  # a broken plugin must not stop the core
                print(f"warning: t2v-turbo plugin {ep.name!r} ({ep.value}) failed to load: {e}", file=sys.stderr)
    finally:
        _loading = False
    return [n for n, ok in _loaded.items() if ok]
