"""Backbone adapters behind one contract (see base.py). Adapters import their heavy stacks lazily:
`from t2v_turbo.models.diffusers_video import DiffusersVideoBackbone`,
`from t2v_turbo.models.videocrafter2 import VideoCrafter2, VC2Config`."""

from .base import Backbone, guidance_to_w, read_metadata

__all__ = ["Backbone", "guidance_to_w", "read_metadata", "VideoCrafter2", "VC2Config", "DiffusersVideoBackbone"]


def __getattr__(name: str):
    if name in ("VideoCrafter2", "VC2Config"):
        from . import videocrafter2

        return getattr(videocrafter2, name)
    if name == "DiffusersVideoBackbone":
        from .diffusers_video import DiffusersVideoBackbone

        return DiffusersVideoBackbone
    raise AttributeError(name)
