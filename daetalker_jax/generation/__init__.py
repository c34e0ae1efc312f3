"""Generation helpers used by `daetalker_jax.Talker`: head-pose control."""
