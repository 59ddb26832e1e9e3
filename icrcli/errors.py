"""The exception that means "the user can fix this" (the CLI turns it into exit code 2), and SIGTERM as an
exception."""


class UserError(Exception):
    """Bad usage or bad input. The message is one paragraph: what is wrong, then what to do."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (CI runners, `timeout`, `kill`), raised where Ctrl-C would be so it is handled the same way: what
    is done is kept and said, the work resumes on the next run. The CLI exits 143 (128 + 15) on it."""


class OptionError(UserError, ValueError):
    """An option out of its range (raised when the options object is built) or a bad argument to the Python API:
    from Python a ValueError, on the command line exit 2, with the same sentence either way."""
