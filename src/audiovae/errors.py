"""The one exception type the CLI turns into a one-line message and exit code 1."""


class AudioVAEError(Exception):
    """A user-facing error: the message names the file or key and the problem, on one line."""


def shown(value: object, limit: int = 80) -> str:
    """``repr`` of a value read from a file, for a message: one line (control characters escaped), at most
    ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
