"""Stage 1, the inputs: the user's sequences in, padded arrays and the kernel's table out.

Ragged normalisation lives in :mod:`seqprep._core`; here are padding and masks, the targets
rule, teacher forcing, the one input stage (``x`` / ``y`` / weights, one collection or a dict
or tuple of named fields) and the gather-and-pad kernel every executor calls. numpy only.

Example:
    >>> from seqprep.inputs import pad_sequences
    >>> pad_sequences([[1, 2], [3]], padding="post").tolist()
    [[1, 2], [3, 0]]
"""

from seqprep._core.lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "pad_sequences": "._padding",
    "sequence_lengths": "._padding",
    "unpad": "._padding",
    "pad_fields": "._pad_fields",
    "length_mask": "._masking",
    "sequence_weights": "._masking",
    "check_cudnn_mask": "._masking",
    "resolve_targets": "._targets",
    "teacher_forcing": "._seq2seq",
    "edit_distance": "._seq2seq",
    "error_rates": "._seq2seq",
})
