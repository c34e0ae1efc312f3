"""Flax NNX models: the DiffAE (unet.py, layers.py); speech2latent comes with its issue."""
