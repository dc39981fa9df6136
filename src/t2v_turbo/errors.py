"""User-facing errors: the CLI prints them as one line and exits with code 2 (no traceback)."""


class UserError(Exception):
    """Bad input from the user (config key or value, missing file, unknown preset or model)."""
