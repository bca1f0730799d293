"""The one exception type that means "the user handed us something bad".

Entry points wrapped in `trainkit.run.main` print it as a single line and exit 2, so a
researcher sees which file, flag or value is wrong instead of a traceback. Anything else
that escapes is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: the message names the input and what is wrong with it, on one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
