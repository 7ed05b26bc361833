"""One exception type for every user-facing mistake: the CLI prints its message on one line and exits 2."""


class LangmoeError(Exception):
    """Bad input or state the user can fix. The message says what to fix, in one line."""
