"""The one exception type the CLI turns into a one-line message and exit code 1."""


class AudioVAEError(Exception):
    """A user-facing error: the message names the file or key and the problem, on one line."""
