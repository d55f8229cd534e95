"""The one exception type the CLI turns into a one-line message and exit code 1, and the message for a
missing optional package."""


class AudioVAEError(Exception):
    """A user-facing error: the message names the file or key and the problem, on one line."""


def shown(value: object, limit: int = 80) -> str:
    """``repr`` of a value read from a file, for a message: one line (control characters escaped), at most
    ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# The extra of pyproject.toml that provides each optional top-level import.
EXTRAS = {**dict.fromkeys(("lightning", "tensorboard", "webdataset", "tqdm", "mido", "pedalboard", "sklearn"), "train"),
          **dict.fromkeys(("fastapi", "uvicorn", "multipart", "python_multipart", "anyio", "pydantic", "starlette"),
                          "app"),
          **dict.fromkeys(("pesq", "pystoi", "visqol"), "bench")}


def missing_extra(e: ModuleNotFoundError) -> str | None:
    """The one-line message for a missing package of an extra (which extra to install), None for any other."""
    name = (e.name or "").split(".")[0]
    extra = EXTRAS.get(name)
    return extra and f"this command needs the '{extra}' extra ({name} is not installed): " \
        f"pip install 'audiovae[{extra}]'"
