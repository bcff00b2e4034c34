"""Errors a user can cause, reported as one clear message (no traceback) by the CLI."""


class UserError(Exception):
    """Bad input the user can fix: the message names the thing and the fix."""


class MissingInput(UserError):
    """An input a stage reads does not exist (a stage before it has not run)."""

    def __init__(self, path: str, what: str):
        self.path, self.what = path, what
        super().__init__(f"{path} ({what}) does not exist")
