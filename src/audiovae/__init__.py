"""audiovae: variational autoencoders for audio compression, classification and generation."""

from audiovae.errors import AudioVAEError

__version__ = "0.1.0"
__all__ = ["AudioVAEError", "__version__"]
