"""The built-in synthetic talking-face corpus: TTS speech, an acoustic mouth track, head motion and a
3-D face renderer, written out like a real single-speaker dataset with analytic ground truth."""

from daetalker_jax.synth.measure import Measurement, measure

__all__ = ["Measurement", "measure"]
