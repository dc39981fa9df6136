"""Import the modules whose factories register the built-in rewards (factories import heavy stacks
on call). Plugins register their own rewards (see plugins.py)."""

from . import image, video  # noqa: F401
