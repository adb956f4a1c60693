"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""


class UserError(Exception):
    """A problem with the user's input (a file, a folder, an option), not a bug."""
