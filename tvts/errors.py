"""Errors a user can cause, reported as one clear message (no traceback) by the CLI."""


class UserError(Exception):
    """Bad input the user can fix: the message names the thing and the fix."""
