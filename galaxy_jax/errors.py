"""Errors a user can act on. main.py prints them as one line, without a traceback."""


class UserError(Exception):
    """Bad config, missing file, unwritable workdir: the message says what to change."""
