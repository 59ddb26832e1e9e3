"""The one exception type that means "the user can fix this": the CLI turns it into exit code 2."""


class UserError(Exception):
    """Bad usage or bad input. The message is one paragraph: what is wrong, then what to do."""
