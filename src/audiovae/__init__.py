"""audiovae: variational autoencoders for audio compression, classification and generation."""

from audiovae.errors import AudioVAEError

__version__ = "0.1.0"
__all__ = ["AudioVAEError", "Codec", "__version__", "embed", "list_models", "load"]


def __getattr__(name: str):
    # Lazy, so that torch-free modules (the file format, audio I/O) import without torch.
    if name in ("load", "list_models"):
        from audiovae import registry

        return getattr(registry, name)
    if name == "Codec":
        from audiovae.codec.stream import Codec

        return Codec
    if name == "embed":
        from audiovae.classify import embed

        return embed
    raise AttributeError(f"module 'audiovae' has no attribute {name!r}")
