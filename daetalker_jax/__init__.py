"""daetalker_jax: DAE-Talker (speech-driven talking faces with a diffusion autoencoder) in JAX/Flax."""

__version__ = "0.1.0"
