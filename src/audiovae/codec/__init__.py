"""Neural codec: quantization and entropy coding of latents, streaming, and the ``.avae`` file format."""
