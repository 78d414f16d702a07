"""Real data sets bundled with seqprep, loaded without network access.

- :func:`load_japanese_vowels`: UCI Japanese Vowels, 640 multivariate sequences of 7 to 29
  frames (12 features), 9 speakers. Use :func:`seqprep.sequence_lengths` on the result for the
  lengths alone.
- :func:`load_cmudict`: 40,000 English words and their phonemes from the CMU Pronouncing
  Dictionary (38,000 for training, 2,000 held out), for grapheme-to-phoneme encoder–decoders.
"""

from __future__ import annotations

from seqprep.datasets._cmudict import Pronunciations, load_cmudict
from seqprep.datasets._japanese_vowels import load_japanese_vowels

__all__ = ["Pronunciations", "load_cmudict", "load_japanese_vowels"]
