"""One exception type for every problem a user can fix (bad input, files, options).

The CLI prints its message on one line and exits with status 2; anything else is a bug and
keeps its traceback.
"""


class UserError(Exception):
    """Bad input: a wrong file, option, config value or run directory."""
