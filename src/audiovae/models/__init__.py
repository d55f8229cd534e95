"""Models: the VAE (encoder, Gaussian posterior, decoder) and its building blocks."""
