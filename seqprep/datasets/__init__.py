"""Real data sets bundled with seqprep, loaded without network access.

- :func:`load_japanese_vowels`: UCI Japanese Vowels, 640 multivariate sequences of 7 to 29
  frames (12 features), 9 speakers. Use :func:`seqprep.sequence_lengths` on the result for the
  lengths alone.
"""

from __future__ import annotations

from seqprep.datasets._japanese_vowels import load_japanese_vowels

__all__ = ["load_japanese_vowels"]
