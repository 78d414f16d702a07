"""Reference models: a small documented RNN for post-padded variable-length batches and its
compile step, and an encoder–decoder with batched greedy decoding.

:func:`reference_rnn` builds (but does not compile) a Keras 3 model; :func:`compile_reference`
compiles it with the loss, metrics and loss reduction that suit its head, so that a
per-timestep loss is the mean over *real* time steps whether or not Keras propagates the mask
to the loss and whether or not you also pass 0/1 per-timestep sample weights.

Why "uncompiled but ready": the model is built to the last layer and takes post-padded batches
straight from :func:`seqprep.pad_sequences` / :func:`seqprep.bucketed_dataset`; you choose the
optimizer (or call :func:`compile_reference` for the defaults used in the docs and the demo).
"""

from seqprep.models._rnn import compile_reference, feature_stats, reference_rnn
from seqprep.models._seq2seq import greedy_decode, reference_seq2seq

__all__ = ["compile_reference", "feature_stats", "greedy_decode", "reference_rnn",
           "reference_seq2seq"]
