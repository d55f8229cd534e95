"""Training: Lightning module, data loading, configs and the training run."""
