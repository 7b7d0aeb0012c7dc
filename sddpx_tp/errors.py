"""Errors that are the user's to fix: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input: a wrong path, an unknown model or class, an out-of-range setting."""
