"""daetalker_jax: DAE-Talker (speech-driven talking faces with a diffusion autoencoder) in JAX/Flax.

`from daetalker_jax import Talker` gives the generation API (talker.py); it is loaded on first use so
that light tools (the corpus synthesizer, prepare) do not import JAX.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "Talker":
        from daetalker_jax.talker import Talker

        return Talker
    raise AttributeError(f"module 'daetalker_jax' has no attribute {name!r}")
