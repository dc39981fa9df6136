"""Backbone adapters behind one contract (see base.py)."""

from .base import Backbone, guidance_to_w, read_metadata

__all__ = ["Backbone", "guidance_to_w", "read_metadata"]
