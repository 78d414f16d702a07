"""Tools on top of the library: length analysis, plots, the command line and the demos.

The modules here are public and import only the stages' public names and private modules:
:mod:`seqprep.tools.analyze`, :mod:`seqprep.tools.plots`, :mod:`seqprep.tools.cli`,
:mod:`seqprep.tools.demo` (Japanese Vowels) and :mod:`seqprep.tools.demo_g2p` (CMUdict
grapheme-to-phoneme).
"""
