"""User-facing errors: one line, naming the file/key/value and what would be valid.

The CLI catches `TPAError`, prints its message on one line and exits with code 2;
`--debug` shows the traceback instead.
"""


class TPAError(Exception):
    """A problem with the user's input (file, recipe, argument), not a bug."""

    exit_code = 2
