"""Import the modules whose factories register built-in rewards (kept lazy: factories import heavy stacks on call)."""

import importlib

for _mod in ("t2v_turbo.rewards.image", "t2v_turbo.rewards.video", "t2v_turbo.worlds.moving_digits.rewards"):
    try:
        importlib.import_module(_mod)
    except ModuleNotFoundError as e:  # a module not written yet / optional
        if e.name != _mod:
            raise
