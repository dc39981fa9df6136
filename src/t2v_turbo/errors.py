"""The project's errors: one base class, four kinds.

Library code raises these for anything the *user* can fix (a bad config key, a broken checkpoint, a
broken data item, a bad argument). The commands catch `T2VTurboError` only and print one line
(`error: ...`, exit code 2); any other exception is a bug and keeps its traceback.

Every subclass is also a `ValueError`, so callers that catch `ValueError` keep working.
"""

from __future__ import annotations


class T2VTurboError(ValueError):
    """Base of every user-fixable error; `str(e)` is one line meant for the user."""


class ConfigError(T2VTurboError):
    """A config key or value, preset, registry name or option that does not exist or does not fit."""


class CheckpointError(T2VTurboError):
    """A model / weights file that is missing, corrupt, not weights-only, or of the wrong layout."""


class DataError(T2VTurboError):
    """Training or evaluation data that cannot be read (missing folder, no usable items)."""


class InputError(T2VTurboError):
    """A bad command-line or API argument (a value out of range, an unreadable prompt file, ...)."""


# The name used before the hierarchy existed; new code raises one of the four kinds above.
UserError = InputError

__all__ = ["T2VTurboError", "ConfigError", "CheckpointError", "DataError", "InputError", "UserError"]
